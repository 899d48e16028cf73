// Shared start-up for authgate's browser tests: Debian's chromium, headless, driven by
// playwright-core. A scenario script calls `scenario(async (browser, args) => result)`; it
// reads its arguments as JSON from argv[2] and prints `result <json>` on success. Any thrown
// error (a failed expectation included) exits 1 with the message on stderr, after saving a
// screenshot of the page next to the test's artifacts when it can.
import { chromium } from 'playwright-core';

// The flags this machine needs (../shared/protocols/PEERS.md): no sandbox as root, no GPU,
// and no background networking (the closed network refuses those connections).
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

// `options.flags(args)`: more launch flags for a scenario (e.g. --host-resolver-rules).
export async function scenario(run, options = {}) {
  const args = JSON.parse(process.argv[2] ?? '{}');
  const browser = await chromium.launch({
    executablePath: process.env.AUTHGATE_TEST_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [...FLAGS, ...(options.flags ? options.flags(args) : [])],
  });
  try {
    const result = await run(browser, args);
    process.stdout.write(`result ${JSON.stringify(result ?? {})}\n`);
  } catch (err) {
    process.stderr.write(`scenario failed: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

// Throws unless `cond`; the message names what was expected.
export function expect(cond, message) {
  if (!cond) throw new Error(`expected: ${message}`);
}
