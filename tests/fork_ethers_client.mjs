// A developer's ethers v6 session on a DePU fork URL (run by tests/test_forks_clients.py):
// chain id, send, deploy, call, trace, filters (contract.on), snapshot/revert, and following mainnet with the
// state kept. Prints one JSON line of what it saw; exits non-zero on the first thing that does not hold.
import { readFileSync } from "node:fs";
import { ethers } from "ethers";

const [forkUrl, mainnetUrl, key, artifactPath] = process.argv.slice(2);
const artifact = JSON.parse(readFileSync(artifactPath, "utf8"));
const seen = {};
const deadline = (ms) => Date.now() + ms;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, check, ms = 30000) {
  const end = deadline(ms);
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const provider = new ethers.JsonRpcProvider(forkUrl, undefined, { pollingInterval: 200 });
const mainnet = new ethers.JsonRpcProvider(mainnetUrl);
const wallet = new ethers.Wallet(key, provider);

// On a failure, what the fork says about itself and the wallet's nonces goes to stderr with the error, so a
// failure under load can be told apart from a slow one.
async function diagnosis() {
  const ask = async (method, params) => provider.send(method, params).catch((error) => `error: ${error.shortMessage || error}`);
  return {
    follow: await ask("depu_followStatus", []),
    nonceLatest: await ask("eth_getTransactionCount", [wallet.address, "latest"]),
    noncePending: await ask("eth_getTransactionCount", [wallet.address, "pending"]),
    block: await ask("eth_blockNumber", []),
    seen,
  };
}

async function session() {
  seen.chainId = Number((await provider.getNetwork()).chainId);

  const sent = await wallet.sendTransaction({ to: "0x000000000000000000000000000000000000dEaD", value: 12345n });
  seen.sendStatus = (await sent.wait()).status;

  const factory = new ethers.ContractFactory(artifact.abi, artifact.bytecode, wallet);
  const token = await factory.deploy("Fork Dollar", "FKD", 18, 10n ** 24n);
  await token.waitForDeployment();
  seen.token = await token.getAddress();
  seen.balance = (await token.balanceOf(wallet.address)).toString();

  // contract.on: ethers installs an eth_newFilter and polls eth_getFilterChanges through the proxy
  const events = [];
  await token.on("Transfer", (from, to, amount) => events.push(amount.toString()));
  await sleep(500);
  const transfer = await token.transfer("0x00000000000000000000000000000000000000aa", 7n);
  const mined = await transfer.wait();
  await until("the Transfer event", () => events.includes("7"));
  seen.eventBeforeSync = true;

  const trace = await provider.send("debug_traceTransaction", [mined.hash, { tracer: "callTracer" }]);
  seen.traceTo = trace.to.toLowerCase();
  seen.traceInput = trace.input.slice(0, 10);

  const snapshot = await provider.send("evm_snapshot", []);
  await (await token.transfer("0x00000000000000000000000000000000000000bb", 1000n)).wait();
  seen.reverted = await provider.send("evm_revert", [snapshot]);
  seen.bbAfterRevert = (await token.balanceOf("0x00000000000000000000000000000000000000bb")).toString();

  // mainnet moves on; the fork follows it block by block, keeping everything above
  const target = (await mainnet.getBlockNumber()) + 3;
  await mainnet.send("anvil_mine", ["0x3"]);
  const status = await until("the fork to follow mainnet", async () => {
    const now = await provider.send("depu_followStatus", []);
    return now.base_block >= target && now;
  });
  seen.followedTo = status.base_block;
  seen.balanceAfterSync = (await token.balanceOf(wallet.address)).toString();
  seen.codeAfterSync = (await provider.getCode(seen.token)).length > 2;
  // the filter ethers installed before the sync still delivers: the fork's front kept its id
  await (await token.transfer("0x00000000000000000000000000000000000000aa", 8n)).wait();
  await until("the Transfer event after the sync", () => events.includes("8"));
  seen.eventAfterSync = true;
  await token.removeAllListeners();
}

try {
  await session();
} catch (error) {
  console.error(JSON.stringify(await diagnosis()));
  throw error;
}
console.log(JSON.stringify(seen));
provider.destroy();
mainnet.destroy();
