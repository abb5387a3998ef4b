// The node a till page talks to is SIGKILLed in the middle of 20 edits: the page moves
// to another node by itself, the cashier sees the failover state but never an error, and
// every edit is committed exactly once. Then the page's new node is paused (SIGSTOP: its
// connections stay open and say nothing): with no edit to send, the page finds the dead
// stream by its silence (no heartbeat for two seconds) and moves again. Each test prints
// how long the page took to move.

import { expect, test, type Page } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(3);
});
test.afterAll(() => cluster?.stop());

/** Records every phase and node the connection indicator shows, however briefly, with
 * the time (ms since the epoch) it showed it. */
async function recordPhases(page: Page): Promise<void> {
  await page.evaluate(() => {
    type Seen = { phase: string; node: string; at: number };
    const w = window as unknown as { phases: string[]; seen: Seen[] };
    w.phases = [];
    w.seen = [];
    const el = document.querySelector("[data-testid=connection]");
    const observer = new MutationObserver(() => {
      const now = document.querySelector("[data-testid=connection]");
      const phase = now?.getAttribute("data-phase") ?? "";
      const node = now?.getAttribute("data-node") ?? "";
      if (w.phases[w.phases.length - 1] !== phase) w.phases.push(phase);
      const last = w.seen[w.seen.length - 1];
      if (last?.phase !== phase || last?.node !== node) w.seen.push({ phase, node, at: Date.now() });
    });
    if (el) observer.observe(el.parentElement ?? el, { attributes: true, subtree: true, childList: true });
  });
}

/** How long after `since` the page first showed itself online on a node other than
 * `from`, as the recorder saw it; undefined if it never did. */
async function movedAfter(page: Page, from: string, since: number): Promise<number | undefined> {
  const seen = await page.evaluate(
    () => (window as unknown as { seen: { phase: string; node: string; at: number }[] }).seen,
  );
  const moved = seen.find((s) => s.at >= since && s.node !== from && s.phase === "online");
  return moved === undefined ? undefined : moved.at - since;
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
  let killedAt = 0;
  for (let edit = 1; edit <= 20; edit++) {
    if (edit === 6) {
      killedAt = Date.now();
      cluster.kill(cluster.idOf(node ?? ""));
    }
    await up.click();
    await expect(till.getByTestId("qty")).toHaveText(String(1 + edit));
    await till.waitForTimeout(100);
  }
  await settled(till);

  // The page moved to a live node, showed it was switching, and showed no error.
  await expect(till.getByTestId("connection")).not.toHaveAttribute("data-node", node ?? "");
  const phases = await till.evaluate(() => (window as unknown as { phases: string[] }).phases);
  console.log(`connection phases seen: ${phases.join(" → ")}`);
  const took = await movedAfter(till, node ?? "", killedAt);
  console.log(`the page moved from the killed node to another one ${took ?? "?"} ms after the kill`);
  expect(took).toBeDefined();
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

test("pausing an idle till's node moves the page by its stream's silence", async ({ browser }) => {
  // The node the first test killed comes back, so the group keeps a majority while
  // another node is paused.
  cluster.startNode(1);
  await cluster.waitHealthy();
  const till = await pairedPage(browser, cluster, "till-2", "till", 2);
  await newOrder(till, "14");
  await settled(till);
  const node = (await till.getByTestId("connection").getAttribute("data-node")) ?? "";
  const id = cluster.idOf(node);
  await recordPhases(till);

  // Nothing to send: only the Subscribe stream can tell the page its node went quiet.
  const pausedAt = Date.now();
  cluster.pause(id);
  try {
    await expect(till.getByTestId("connection")).not.toHaveAttribute("data-node", node);
    await expect(till.getByTestId("connection")).toHaveAttribute("data-phase", "online");
    const took = await movedAfter(till, node, pausedAt);
    console.log(`the page moved from the paused node to another one ${took ?? "?"} ms after the pause`);
    expect(took).toBeDefined();

    // And it works there: an edit is committed.
    await addFromMenu(till, "FRIES");
    await settled(till);
    await expect(till.getByTestId("refused")).toHaveCount(0);
  } finally {
    cluster.resume(id);
  }
});
