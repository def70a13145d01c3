// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title OddToken: emits Transfer-signature logs in shapes the standard does not allow.
/// @notice Real chains carry such logs (old or buggy tokens). It has no symbol() or decimals(), so metadata
///         lookups fail too. Each shape is one ``kind``:
///         1: 3 topics, no data (value missing)
///         2: 4 topics and 1 data word (an extra topic)
///         3: 3 topics and 16 bytes of data (short data)
///         4: 2 topics (only ``from`` indexed), ``to`` and value in 2 data words
///         5: 1 topic (nothing indexed), from, to, value in 3 data words
contract OddToken {
    bytes32 internal constant TRANSFER = keccak256("Transfer(address,address,uint256)");

    function emitOdd(uint8 kind, address to, uint256 value) external {
        bytes32 sig = TRANSFER;
        address from = msg.sender;
        assembly {
            let ptr := mload(0x40)
            switch kind
            case 1 {
                log3(ptr, 0, sig, from, to)
            }
            case 2 {
                mstore(ptr, value)
                log4(ptr, 32, sig, from, to, value)
            }
            case 3 {
                mstore(ptr, shl(128, value))
                log3(ptr, 16, sig, from, to)
            }
            case 4 {
                mstore(ptr, to)
                mstore(add(ptr, 32), value)
                log2(ptr, 64, sig, from)
            }
            case 5 {
                mstore(ptr, from)
                mstore(add(ptr, 32), to)
                mstore(add(ptr, 64), value)
                log1(ptr, 96, sig)
            }
            default {
                revert(0, 0)
            }
        }
    }
}
