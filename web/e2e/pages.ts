// Page helpers shared by the browser tests.

import { expect, type Browser, type Page } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Cluster } from "./cluster";

/** Where screenshots go: test-results/screens, or SCREENS_DIR (`npm run screens` points it
 * at docs/screens). */
const SCREENS = process.env.SCREENS_DIR ?? resolve(fileURLToPath(import.meta.url), "..", "..", "test-results", "screens");

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENS, { recursive: true });
  await page.screenshot({ path: join(SCREENS, `${name}.png`) });
}

/** A fresh browser profile (its own IndexedDB) paired as `device` through the pairing
 * link on node `node`'s page. */
export async function pairedPage(
  browser: Browser,
  cluster: Cluster,
  device: string,
  role: string,
  node: number,
  viewport = { width: 1280, height: 800 },
): Promise<Page> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (err) => console.log(`[${device}] page error: ${err.message}`));
  // The hub serves the app with a Content-Security-Policy: anything it blocks is a bug.
  const blocked: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error" && msg.text().includes("Content Security Policy")) blocked.push(msg.text());
  });
  await page.goto(cluster.pairLink(device, role, node));
  // A fresh profile's first load (the service worker installing, IndexedDB created) took
  // over 15 s once on a busy 2-core CI machine, before the page's first Hello.
  await expect(page.getByTestId("connection")).toHaveAttribute("data-phase", "online", { timeout: 30_000 });
  expect(blocked, "the page ran within its Content-Security-Policy").toEqual([]);
  // The token does not stay in the address bar (or the history).
  expect(page.url()).not.toContain("#/pair/");
  return page;
}

/** Creates an order for `table` on a till page and opens it; returns its id. */
export async function newOrder(page: Page, table: string): Promise<string> {
  await page.getByTestId("new-table").fill(table);
  await page.getByTestId("new-order").click();
  const editor = page.getByTestId("order-editor");
  await expect(editor).toBeVisible();
  const id = await editor.getAttribute("data-order-id");
  if (!id) throw new Error("the editor names no order");
  return id;
}

/** Adds one of a menu item to the open order; resolves once the edit is queued (the
 * line shows only after the outbox has it). */
export async function addFromMenu(page: Page, sku: string): Promise<void> {
  const line = page.locator(`[data-testid=line][data-sku="${sku}"]`);
  const before = (await line.count()) ? Number(await line.first().getAttribute("data-quantity")) : 0;
  await page.locator(`[data-testid=menu-item][data-sku="${sku}"]`).click();
  await expect(line.first()).toHaveAttribute("data-quantity", String(before + 1));
}

/** Waits until everything the page queued is answered and back in its committed view. */
export async function settled(page: Page): Promise<void> {
  await expect(page.getByTestId("connection")).toHaveAttribute("data-pending", "0", { timeout: 30_000 });
}

/** What a page has stored (IndexedDB) of order `orderId`, and its committed cursor. */
export async function storedOrder(
  page: Page,
  orderId: string,
): Promise<{ cursor: number; status?: string; payments?: unknown[] }> {
  return page.evaluate(async (id) => {
    const db = await new Promise<IDBDatabase>((ok, fail) => {
      const req = indexedDB.open("pos-hub");
      req.onsuccess = () => ok(req.result);
      req.onerror = () => fail(req.error);
    });
    const get = (store: string, key: IDBValidKey) =>
      new Promise<any>((ok, fail) => {
        const req = db.transaction(store).objectStore(store).get(key);
        req.onsuccess = () => ok(req.result);
        req.onerror = () => fail(req.error);
      });
    const order = await get("orders", id);
    const cursor = await get("meta", "cursor");
    db.close();
    return { cursor: cursor ?? 0, status: order?.status, payments: order?.payments };
  }, orderId);
}
