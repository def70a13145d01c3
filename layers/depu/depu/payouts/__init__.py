"""Money out: providers withdraw their earnings as DUSD, an ERC-20, sent from the treasury on chain.

The treasury's key is a secp256k1 key in AWS KMS that never leaves it; each payout is a state machine
(requested -> debited -> signed -> sent -> confirmed, or failed -> re-credited) whose every transition is
one conditional write, so a crash at any step resumes without paying twice.
"""
