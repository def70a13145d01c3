/* Telegram Mini App launch parameters, without Telegram's own script.
 *
 * Telegram opens a Mini App with its launch data in the URL fragment (#tgWebAppData=...&tgWebAppThemeParams=...).
 * If the host injected window.Telegram.WebApp (its script), that is used first. Theme changes arrive through
 * Telegram's event bridge (mobile: window.Telegram.WebView.receiveEvent; web: postMessage from the client).
 */
(function () {
  "use strict";

  var TELEGRAM_WEB_ORIGIN = "https://web.telegram.org";
  var fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  var injected = window.Telegram && window.Telegram.WebApp ? window.Telegram.WebApp : null;
  var themeListeners = [];

  function parseJson(text) {
    if (!text) return null;
    try {
      var value = JSON.parse(text);
      return value && typeof value === "object" ? value : null;
    } catch (e) {
      return null;
    }
  }

  function postEvent(type, data) {
    var payload = JSON.stringify({ eventType: type, eventData: data || {} });
    try {
      if (window.TelegramWebviewProxy && window.TelegramWebviewProxy.postEvent) {
        window.TelegramWebviewProxy.postEvent(type, JSON.stringify(data || {}));
      } else if (window.parent && window.parent !== window) {
        window.parent.postMessage(payload, TELEGRAM_WEB_ORIGIN);
      }
    } catch (e) {
      /* not inside Telegram: nothing to tell */
    }
  }

  function themeChanged(params) {
    if (!params || typeof params !== "object") return;
    themeListeners.forEach(function (listener) { listener(params); });
  }

  function receiveEvent(type, data) {
    if (type === "theme_changed" && data) themeChanged(data.theme_params);
  }

  if (!injected) {
    window.Telegram = window.Telegram || {};
    window.Telegram.WebView = window.Telegram.WebView || { receiveEvent: receiveEvent };
    window.addEventListener("message", function (event) {
      if (event.origin !== TELEGRAM_WEB_ORIGIN) return;
      var message = typeof event.data === "string" ? parseJson(event.data) : null;
      if (message) receiveEvent(message.eventType, message.eventData);
    });
  } else if (injected.onEvent) {
    injected.onEvent("themeChanged", function () { themeChanged(injected.themeParams); });
  }

  var injectedTheme = injected && injected.themeParams && Object.keys(injected.themeParams).length ? injected.themeParams : null;

  window.DepuTelegram = {
    /** The signed launch data (empty outside Telegram). */
    initData: (injected && injected.initData) || fragment.get("tgWebAppData") || "",
    /** Telegram's theme colours ({bg_color, text_color, ...}); empty outside Telegram. */
    themeParams: injectedTheme || parseJson(fragment.get("tgWebAppThemeParams")) || {},
    /** A one-time browser login code from the bot's link (#login=...). */
    loginCode: fragment.get("login") || "",
    loginError: fragment.has("login_error"),
    insideTelegram: Boolean(injected || fragment.get("tgWebAppData")),
    onThemeChanged: function (listener) { themeListeners.push(listener); },
    /** Tell Telegram the page is ready (hides its placeholder) and may take the full height. */
    ready: function () {
      if (injected && injected.ready) {
        injected.ready();
        if (injected.expand) injected.expand();
      } else {
        postEvent("web_app_ready");
        postEvent("web_app_expand");
      }
    },
    /** Drop the one-time login code from the address bar, so a reload or a shared URL cannot reuse it. */
    forgetLoginCode: function () {
      if (!fragment.has("login")) return;
      fragment.delete("login");
      var rest = fragment.toString();
      window.history.replaceState(null, "", window.location.pathname + window.location.search + (rest ? "#" + rest : ""));
    }
  };
})();
