// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title DepuCollectible: an ERC-721-shaped token.
/// @notice Its Transfer has the same signature as ERC-20's but all three arguments are indexed, so the log
///         has 4 topics and no data: the indexer must record a token id, never an amount.
contract DepuCollectible {
    string public name = "DePU Collectible";
    string public symbol = "DEPUC";

    mapping(uint256 => address) public ownerOf;

    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    function mint(address to, uint256 tokenId) external {
        require(ownerOf[tokenId] == address(0), "minted");
        ownerOf[tokenId] = to;
        emit Transfer(address(0), to, tokenId);
    }

    function transferFrom(address from, address to, uint256 tokenId) external {
        require(ownerOf[tokenId] == from && from == msg.sender, "owner");
        ownerOf[tokenId] = to;
        emit Transfer(from, to, tokenId);
    }
}
