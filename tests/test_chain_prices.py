"""Dollar prices from DePU's own constant-product pair on a real anvil chain (DevChain.deploy_market), read by
the indexer into ChainTable (moto): time-weighted, so a manipulated block does not move them; transfers get
dollar values, and a dollar threshold on a watch decides which alert."""
from __future__ import annotations

from decimal import Decimal

import pytest

from local.devchain import DevChain

pytestmark = pytest.mark.e2e


@pytest.fixture
def market(aws):
    with DevChain(accounts=4) as chain:
        chain.deploy_defaults()
        chain.deploy_market(eth_price=3000, depth_eth=1000)
        yield chain


def make_indexer(chain, notices):
    from depu.chain.indexer import Indexer, IndexerConfig

    return Indexer(chain.rpc_url, IndexerConfig(confirmations=0, start_block=0, chunk_blocks=1000),
                   notify=notices.append)


def later(chain, seconds: int) -> None:
    chain.rpc("evm_increaseTime", seconds)
    chain.rpc("evm_mine")


def test_the_market_sits_where_the_price_list_says(market):
    from depu.analytics import prices

    listing = prices.listing()
    assert market.pair.lower() in listing["pools"]
    assert market.tokens["DETH"].address.lower() == listing["wrapped_native"]
    assert {market.tokens[k].address.lower() for k in ("DUSD", "USDD")} == listing["stablecoins"]


def test_a_single_block_manipulation_does_not_move_the_time_weighted_price(market):
    from depu.analytics import prices

    notices: list = []
    indexer = make_indexer(market, notices)
    for _ in range(4):  # half an hour of history at 3,000 USDD per DETH
        later(market, 600)
        indexer.run(until_caught_up=True)
    book = prices.PriceBook(indexer.rpc)
    assert abs(book.price("eth") - 3000) < Decimal("0.01")
    assert book.price(market.tokens["DETH"].address.lower()) == book.price("eth")
    assert book.price(market.tokens["USDD"].address.lower()) == 1

    trader = market.accounts[1]
    market.transfer(market.tokens["DETH"], market.accounts[0], trader, 10_000 * 10**18)
    market.swap(trader, "DETH", 9_000 * 10**18)  # dumps the spot price about 100x in one block
    indexer.run(until_caught_up=True)
    from depu.chain import store

    [spot] = [int(item["spot"]) for item in store.query_all(f"PRICE#{market.pair.lower()}", reverse=True, limit=1)]
    spot_price = Decimal(spot) / prices.Q112 * 10**12
    assert spot_price < 50, "the pool's spot price really was moved"
    assert abs(prices.PriceBook(indexer.rpc).price("eth") - 3000) < Decimal("0.01"), "not counted yet"

    later(market, 12)  # the next block, 12 s later, the manipulator buys back
    usdd = market.balance_of(market.tokens["USDD"], trader)
    market.swap(trader, "USDD", usdd)
    later(market, 600)
    indexer.run(until_caught_up=True)
    twap = prices.PriceBook(indexer.rpc).price("eth")
    assert abs(twap - 3000) / 3000 < Decimal("0.01"), f"one manipulated block moved the average to {twap}"


def test_transfers_get_dollar_values_and_dollar_thresholds_choose_the_alerts(market):
    from depu.analytics import watches

    notices: list = []
    indexer = make_indexer(market, notices)
    for _ in range(2):
        later(market, 600)
        indexer.run(until_caught_up=True)
    big, small = market.accounts[2].lower(), market.accounts[3].lower()
    from depu.analytics import labels

    labels.set_label(9, big, "my whale")
    labels.set_label(10, big, "someone else's name")
    watches.add(9, 9, big, Decimal(0), min_usd=Decimal(10_000))
    watches.add(9, 9, small, Decimal(0), min_usd=Decimal(10_000))
    deth = market.tokens["DETH"]
    market.transfer(deth, market.accounts[0], market.accounts[2], 5 * 10**18)  # 15,000 $
    market.transfer(deth, market.accounts[0], market.accounts[3], 2 * 10**18)  # 6,000 $
    notices.clear()
    indexer.run(until_caught_up=True)
    texts = [n.text for n in notices if n.chat_id == 9]
    assert len(texts) == 1 and big in texts[0] and "5 DETH (≈ $15,000.00)" in texts[0]
    assert f"<code>{big}</code> (my whale)" in texts[0] and "someone else" not in texts[0]
    assert '<a href="https://etherscan.io/tx/0x' in texts[0]

    from depu.analytics import views

    view = views.address_view(big, "7d")
    [seen] = [flow for flow in view.seen if flow.asset == deth.address.lower()]
    assert abs(seen.usd(seen.inflow) - 15_000) < 1
    token = views.token_view(deth.address.lower(), "7d")
    assert abs(token.price_usd - 3000) < Decimal("0.01") and token.volume_usd > 15_000
    usdd = views.token_view(market.tokens["USDD"].address.lower(), "7d")
    assert usdd.price_usd == 1
    odd = views.token_view(market.tokens["ODD"].address.lower(), "7d")
    assert odd.price_usd is None and odd.volume_usd is None, "no pool, no dollar figure"
