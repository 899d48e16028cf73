// Browser sign-in through authgate: open a protected URL, sign in at the OpenID provider's
// login and consent pages, land back on the URL (the upstream echoes the JWT it received),
// save a screenshot, then sign out.
// args: { url, user, screenshot, signOut, host }   (host resolves to 127.0.0.1)
import { scenario, expect } from './browser.mjs';

await scenario(async (browser, args) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(args.url);
  // The IdP's development login form, then its consent form.
  expect(await page.locator('input[name="login"]').count() === 1, `a login form at ${page.url()}`);
  await page.fill('input[name="login"]', args.user);
  await page.fill('input[name="password"]', 'x');
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  if (page.url().includes('/interaction/')) {
    await Promise.all([
      page.waitForURL((u) => !u.toString().includes('/interaction/') && !u.toString().includes('/auth/')),
      page.click('button[type="submit"]'),
    ]);
  }
  const signedInUrl = page.url();
  const text = await page.locator('body').innerText();
  await page.screenshot({ path: args.screenshot, fullPage: true });
  const cookies = (await context.cookies()).map((c) => ({
    name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path,
  }));
  const me = await page.evaluate(async () => {
    const r = await fetch('/oauth2/userinfo');
    return { status: r.status, body: await r.json() };
  });

  // Sign out (a typed navigation: Sec-Fetch-Site none), returning to a public document.
  await page.goto(args.signOut);
  const afterSignOut = page.url();
  const left = (await context.cookies()).map((c) => c.name);
  const meAfter = await page.evaluate(async () => (await fetch('/oauth2/userinfo')).status);
  return { signedInUrl, text, cookies, me, afterSignOut, left, meAfter };
}, { flags: (args) => [`--host-resolver-rules=MAP ${args.host} 127.0.0.1`] });
