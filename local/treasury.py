"""The local treasury: DUSD, the platform's stablecoin, on the local chain, and gas and DUSD for the treasury
address (the KMS key's, so the payout worker signs exactly as in the cloud).

DUSD is the first contract ``DevChain.deploy_defaults`` deploys from anvil's account 0, so its address is known
before the chain is seeded (the runtime's environment is fixed at start) and is checked once it exists.
"""
from __future__ import annotations

import logging
import time

import rlp
from eth_utils import keccak, to_canonical_address, to_checksum_address

from local.provision import client

log = logging.getLogger("local.treasury")
DUSD_KEY = "DUSD"
FUNDING_DUSD = 1_000_000
FUNDING_ETH = 100


def first_contract_address(deployer: str) -> str:
    """The address of the contract ``deployer`` creates with nonce 0."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(deployer), 0]))[-20:])


def treasury_address(endpoint: str, alias: str, wait_seconds: float = 60.0) -> str:
    from depu.payouts.kms_signer import KmsSigner

    kms = client("kms", endpoint)
    deadline = time.monotonic() + wait_seconds
    while True:  # the stack provisions KMS while the chain is being seeded
        try:
            return KmsSigner(alias, kms).address
        except kms.exceptions.NotFoundException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def fund(chain, endpoint: str, alias: str, expected_token: str) -> str:  # noqa: ANN001 - a DevChain
    """Give the treasury DUSD and gas; returns its address."""
    token = chain.tokens[DUSD_KEY]
    if token.address != expected_token:
        log.warning("DUSD is at %s, not %s: payouts are off in this stack", token.address, expected_token)
    address = treasury_address(endpoint, alias)
    chain.transfer(token, chain.accounts[0], address, FUNDING_DUSD * 10 ** (token.decimals or 18))
    chain.send_eth(chain.accounts[0], address, FUNDING_ETH * 10**18)
    log.info("local treasury %s funded with %d DUSD", address, FUNDING_DUSD)
    return address
