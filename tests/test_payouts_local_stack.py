"""The local stack (`make up`) pays a withdrawal: DUSD is deployed and the KMS treasury funded on the local
chain, the webhook queues the payout and the runtime's SQS poller runs the payout worker to ``confirmed``."""
from __future__ import annotations

import pytest
from eth_account import Account

from conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET
from deadlines import wait_for
from depu import credits
from depu.payouts.models import CONFIRMED, payouts_of
from local.moto_server import free_port
from local.secrets_store import LocalSecrets
from local.stack import LocalStack, StackOptions
from payouts_support import DUSD, provider_with_earnings

pytestmark = pytest.mark.e2e
PROVIDER = 94001


def test_make_up_pays_a_withdrawal_in_dusd_on_the_local_chain(aws, tmp_path) -> None:
    # the tests' own secrets: the functions run in this process, whose Parameters cache may hold them already
    secrets = LocalSecrets(bot_token=TEST_BOT_TOKEN, webhook_secret=TEST_WEBHOOK_SECRET)
    options = StackOptions(api_port=free_port(), standin_port=free_port(), chain_port=free_port(),
                           aws_endpoint=aws.endpoint, chain=True, agent=False, state_dir=tmp_path)
    stack = LocalStack(secrets, options).start()
    try:
        chain = stack.chain
        wait_for(lambda: "DUSD" in chain.tokens and chain.balance_of(chain.tokens["DUSD"], chain.accounts[0]) < 10**9 * DUSD,
                 60, "the treasury's DUSD funding")
        provider_with_earnings(PROVIDER, 10_000)
        payee = Account.create().address  # a fresh address: the seeded activity moves DUSD between dev accounts
        for text in (f"/payout_address {payee}", "/withdraw 3000"):
            assert stack.standin.send_user_message(PROVIDER, text=text).status == 200
        assert "on its way" in stack.standin.messages(PROVIDER)[-1].text
        payout = wait_for(lambda: next((p for p in payouts_of(PROVIDER) if p.state == CONFIRMED), None), 120,
                          "the payout worker to confirm the payout")
        assert chain.balance_of(chain.tokens["DUSD"], payee) == 3 * DUSD
        assert credits.balance(PROVIDER).earned == 7000 and payout.tx_hash
    finally:
        stack.stop()
