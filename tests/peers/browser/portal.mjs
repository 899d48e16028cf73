// The token portal in a real browser: sign in with HTTP Basic, create a token through the
// form, read the secret off the page, use it on /auth, revoke it through the page, make a
// token whose name is markup, and let a page of another site post the form.
// Arguments: { portal, auth, user, password, artifacts }. Result: { secret, auth_before,
// auth_after, forged_status, dialogs }.
import { scenario, expect } from './browser.mjs';

// The decision of /auth for GET /data with `token`, as nginx would ask for it.
async function decide(auth, token) {
  const resp = await fetch(auth, {
    headers: {
      'X-Original-URI': '/data',
      'X-Original-Method': 'GET',
      Authorization: `Bearer ${token}`,
    },
  });
  return resp.status;
}

async function visible(page, text) {
  await page.getByText(text, { exact: false }).first().waitFor({ state: 'visible', timeout: 10000 });
}

scenario(async (browser, args) => {
  const origin = new URL(args.portal).origin;
  // A phone-sized window: the page must read there.
  const context = await browser.newContext({
    httpCredentials: { username: args.user, password: args.password },
    viewport: { width: 390, height: 844 },
  });
  const page = await context.newPage();
  let dialogs = 0;
  page.on('dialog', async (d) => {
    dialogs += 1;
    await d.dismiss();
  });

  const first = await page.goto(args.portal);
  expect(first.status() === 200, `GET /portal answers 200 (got ${first.status()})`);
  await visible(page, `Signed in as ${args.user}`);
  await visible(page, 'You have no API tokens yet.');

  // Create a token through the form.
  await page.getByLabel('Name').fill('ci-deploy');
  await page.getByLabel('read:data').check();
  await page.getByLabel('Expires after').selectOption({ label: '7 days' });
  await page.getByRole('button', { name: 'Create token' }).click();
  await visible(page, 'New token: ci-deploy');
  await visible(page, 'it is shown only once');
  const secret = (await page.locator('#secret').innerText()).trim();
  expect(/^agt_[A-Za-z0-9_-]{43}$/.test(secret), `a secret on the page (got ${secret})`);
  const curl = (await page.locator('#curl').innerText()).trim();
  expect(
    curl === `curl -H "Authorization: Bearer ${secret}" ${origin}/`,
    `the curl line to use (got ${curl})`,
  );
  // The copy button appears with the script (the CSP allows it from this origin) and
  // copies the secret.
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  await page.getByRole('button', { name: 'Copy secret' }).click();
  await page.getByRole('button', { name: 'Copied' }).waitFor({ state: 'visible' });
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied === secret, `the clipboard holds the secret (got ${copied})`);
  // Readable on a phone: nothing wider than the screen.
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth,
  );
  expect(overflow <= 0, `no horizontal scrolling on a phone (${overflow} px too wide)`);
  await page.screenshot({ path: `${args.artifacts}/new-token.png`, fullPage: true });

  const auth_before = await decide(args.auth, secret);

  // Back to the list: the token is there, active, with its expiry.
  await page.getByRole('link', { name: 'Back to your tokens' }).click();
  await visible(page, 'ci-deploy');
  await visible(page, 'active');
  await visible(page, '1 of at most 3 tokens are live');
  await page.screenshot({ path: `${args.artifacts}/list.png`, fullPage: true });
  const listOverflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth,
  );
  expect(listOverflow <= 0, `the list fits a phone (${listOverflow} px too wide)`);

  // Revoke it through the page, with the confirmation.
  await page.getByRole('button', { name: 'Revoke ci-deploy' }).click();
  await visible(page, 'Revoke token ci-deploy?');
  await page.getByRole('button', { name: 'Yes, revoke ci-deploy' }).click();
  await visible(page, 'was revoked.');
  const auth_after = await decide(args.auth, secret);

  // A name that is markup is shown as text (and no script runs).
  const markup = '<script>alert(1)</script>';
  await page.getByLabel('Name').fill(markup);
  await page.getByLabel('read:data').check();
  await page.getByRole('button', { name: 'Create token' }).click();
  await page.getByRole('heading', { name: `New token: ${markup}` }).waitFor({ state: 'visible' });
  await page.goto(args.portal);
  await visible(page, markup);

  // Another site's page posts the create form with the browser's credentials.
  await page.route('http://attacker.test/**', (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><form id="f" method="post" action="${args.portal}/tokens">
        <input name="name" value="forged"><input name="scope" value="read:data">
        <input name="expires" value="86400"><input name="csrf" value="guessed"></form>
        <script>document.getElementById('f').submit()</script>`,
    }),
  );
  const forged = page.waitForResponse((r) => r.url() === `${args.portal}/tokens`);
  await page.goto('http://attacker.test/');
  const forgedResponse = await forged;
  const forged_status = forgedResponse.status();
  await visible(page, 'Nothing was changed');

  await context.close();
  return { secret, auth_before, auth_after, forged_status, dialogs };
});
