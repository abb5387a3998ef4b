// With every node down the till keeps working: 10 edits queue (the banner says 10), the
// page is reloaded (the service worker serves it; the outbox is in IndexedDB), the nodes
// come back, and the 10 edits are committed exactly once.

import { expect, test } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, screenshot, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(3);
});
test.afterAll(() => cluster?.stop());

test("edits made while no node answers survive a reload and commit once when the nodes return", async ({ browser }) => {
  const till = await pairedPage(browser, cluster, "till-1", "till", 1);
  await expect(till.locator("html")).toHaveAttribute("data-offline-ready", "true");
  const orderId = await newOrder(till, "9");
  await addFromMenu(till, "BURGER-CLASSIC");
  await settled(till);

  cluster.killAll();
  const up = till.getByTestId("qty-up");
  for (let edit = 1; edit <= 10; edit++) {
    await up.click();
    await expect(till.getByTestId("qty")).toHaveText(String(1 + edit));
  }
  const banner = till.getByTestId("offline-banner");
  await expect(banner).toBeVisible();
  await expect(banner).toHaveAttribute("data-queued", "10");
  await expect(banner).toContainText("10 edits queued");
  await screenshot(till, "offline");

  await till.reload();
  await expect(till.getByTestId("offline-banner")).toHaveAttribute("data-queued", "10");
  await expect(till.getByTestId("qty")).toHaveText("11");

  for (const id of [1, 2, 3]) cluster.startNode(id);
  await cluster.waitHealthy();
  await expect(till.getByTestId("connection")).toHaveAttribute("data-phase", "online", { timeout: 30_000 });
  await settled(till);
  await expect(till.getByTestId("offline-banner")).toHaveCount(0);
  await expect(till.getByTestId("refused")).toHaveCount(0);

  const updates = (await cluster.committed()).filter(
    (e) => e.aggregateId === orderId && e.type === "order.updated",
  );
  const quantities = updates.map((e) => ((e.payload?.items ?? []) as { quantity: number }[])[0]?.quantity);
  expect(quantities).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  expect(new Set(updates.map((e) => e.eventId)).size).toBe(updates.length);
  expect(Number((await cluster.order(orderId))?.items[0]?.quantity)).toBe(11);
});
