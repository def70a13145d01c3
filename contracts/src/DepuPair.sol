// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

interface IERC20Like {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function transfer(address to, uint256 value) external returns (bool);
}

/// @title DepuPair: DePU's minimal constant-product pool for the local "mainnet".
/// @notice DePU prices tokens from constant-product pools against stablecoins, time-weighted. This pool has
///         the read interface price readers use on mainnet pools (getReserves, token0, token1,
///         price0CumulativeLast, price1CumulativeLast, in 112.112 fixed point), so the local chain exercises
///         the same code: add liquidity, swap with a 0.3% fee, and the cumulative prices that make a
///         time-weighted average cost a manipulator every second it holds the price.
contract DepuPair {
    address public immutable token0;
    address public immutable token1;

    uint112 private reserve0;
    uint112 private reserve1;
    uint32 private blockTimestampLast;

    uint256 public price0CumulativeLast; // token1 per token0, 112.112 fixed point, summed over seconds
    uint256 public price1CumulativeLast; // token0 per token1

    event Sync(uint112 reserve0, uint112 reserve1);
    event Swap(address indexed sender, uint256 amount0In, uint256 amount1In, uint256 amount0Out,
               uint256 amount1Out, address indexed to);

    constructor(address tokenA, address tokenB) {
        require(tokenA != tokenB, "same token");
        (token0, token1) = tokenA < tokenB ? (tokenA, tokenB) : (tokenB, tokenA);
    }

    function getReserves() public view returns (uint112, uint112, uint32) {
        return (reserve0, reserve1, blockTimestampLast);
    }

    /// @notice Deposit both tokens (approved beforehand); no liquidity shares: a test pool.
    function addLiquidity(uint256 amount0, uint256 amount1) external {
        require(IERC20Like(token0).transferFrom(msg.sender, address(this), amount0), "token0");
        require(IERC20Like(token1).transferFrom(msg.sender, address(this), amount1), "token1");
        _update(uint256(reserve0) + amount0, uint256(reserve1) + amount1);
    }

    /// @notice Sell ``amountIn`` of token0 (``zeroForOne``) or token1 for the other, keeping x*y after a
    ///         0.3% fee; reverts when the output is below ``minOut``.
    function swap(uint256 amountIn, bool zeroForOne, uint256 minOut) external returns (uint256 out) {
        (uint256 rIn, uint256 rOut) = zeroForOne ? (uint256(reserve0), uint256(reserve1))
                                                 : (uint256(reserve1), uint256(reserve0));
        require(amountIn > 0 && rIn > 0 && rOut > 0, "empty");
        uint256 withFee = amountIn * 997;
        out = (withFee * rOut) / (rIn * 1000 + withFee);
        require(out >= minOut && out < rOut, "slippage");
        (address tokenIn, address tokenOut) = zeroForOne ? (token0, token1) : (token1, token0);
        require(IERC20Like(tokenIn).transferFrom(msg.sender, address(this), amountIn), "in");
        require(IERC20Like(tokenOut).transfer(msg.sender, out), "out");
        if (zeroForOne) {
            _update(rIn + amountIn, rOut - out);
            emit Swap(msg.sender, amountIn, 0, 0, out, msg.sender);
        } else {
            _update(rOut - out, rIn + amountIn);
            emit Swap(msg.sender, 0, amountIn, out, 0, msg.sender);
        }
    }

    /// @dev The price that held since the last update is added for every second it held, then the
    ///      reserves change: a price set in one block counts only for the seconds until the next change.
    function _update(uint256 balance0, uint256 balance1) private {
        require(balance0 <= type(uint112).max && balance1 <= type(uint112).max, "overflow");
        uint32 timestamp = uint32(block.timestamp);
        unchecked {
            uint32 elapsed = timestamp - blockTimestampLast;
            if (elapsed > 0 && reserve0 != 0 && reserve1 != 0) {
                price0CumulativeLast += ((uint256(reserve1) << 112) / reserve0) * elapsed;
                price1CumulativeLast += ((uint256(reserve0) << 112) / reserve1) * elapsed;
            }
        }
        reserve0 = uint112(balance0);
        reserve1 = uint112(balance1);
        blockTimestampLast = timestamp;
        emit Sync(reserve0, reserve1);
    }
}
