// The node a till page talks to is SIGKILLed in the middle of 20 edits: the page moves
// to another node by itself, the cashier sees the failover state but never an error, and
// every edit is committed exactly once.

import { expect, test, type Page } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(3);
});
test.afterAll(() => cluster?.stop());

/** Records every phase the connection indicator shows, however briefly. */
async function recordPhases(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { phases: string[] };
    w.phases = [];
    const el = document.querySelector("[data-testid=connection]");
    const observer = new MutationObserver(() => {
      const phase = document.querySelector("[data-testid=connection]")?.getAttribute("data-phase") ?? "";
      if (w.phases[w.phases.length - 1] !== phase) w.phases.push(phase);
    });
    if (el) observer.observe(el.parentElement ?? el, { attributes: true, subtree: true, childList: true });
  });
}

test("killing the till's node during 20 edits loses, repeats and reorders nothing", async ({ browser }) => {
  const till = await pairedPage(browser, cluster, "till-1", "till", 1);
  const orderId = await newOrder(till, "12");
  await addFromMenu(till, "FRIES");
  await settled(till);
  const node = await till.getByTestId("connection").getAttribute("data-node");
  expect(node).toBe(cluster.url(1));
  await recordPhases(till);

  const up = till.getByTestId("qty-up");
  for (let edit = 1; edit <= 20; edit++) {
    if (edit === 6) cluster.kill(cluster.idOf(node ?? ""));
    await up.click();
    await expect(till.getByTestId("qty")).toHaveText(String(1 + edit));
    await till.waitForTimeout(100);
  }
  await settled(till);

  // The page moved to a live node, showed it was switching, and showed no error.
  await expect(till.getByTestId("connection")).not.toHaveAttribute("data-node", node ?? "");
  const phases = await till.evaluate(() => (window as unknown as { phases: string[] }).phases);
  console.log(`connection phases seen: ${phases.join(" → ")}`);
  expect(phases.some((p) => p === "reconnecting" || p === "offline")).toBe(true);
  expect(phases[phases.length - 1]).toBe("online");
  await expect(till.getByTestId("refused")).toHaveCount(0);
  await expect(till.getByTestId("auth-error")).toHaveCount(0);

  // Through the API: the 20 edits, each once, in the order they were made.
  const updates = (await cluster.committed()).filter(
    (e) => e.aggregateId === orderId && e.type === "order.updated",
  );
  const quantities = updates.map((e) => {
    const items = (e.payload?.items ?? []) as { quantity: number }[];
    return items[0]?.quantity;
  });
  // The first update added the fries (quantity 1); then 2..21.
  expect(quantities).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
  expect(new Set(updates.map((e) => e.eventId)).size).toBe(updates.length);
  const order = await cluster.order(orderId);
  expect(Number(order?.items[0]?.quantity)).toBe(21);
});
