// Two tills open the same order: the second sees who holds the lock and cannot edit;
// once the first closes the order, the second takes the lock and edits.

import { expect, test } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(3);
});
test.afterAll(() => cluster?.stop());

test("an order open on one till is read-only on another until it is closed", async ({ browser }) => {
  const first = await pairedPage(browser, cluster, "till-1", "till", 1);
  const second = await pairedPage(browser, cluster, "till-2", "till", 2);
  const orderId = await newOrder(first, "7");
  await addFromMenu(first, "FRIES");
  await settled(first);

  await second.locator(`[data-testid=order-row][data-order-id="${orderId}"]`).click();
  await expect(second.getByTestId("locked-by")).toContainText("Locked by till-1");
  await expect(second.getByTestId("qty-up")).toBeDisabled();
  await expect(second.locator("[data-testid=menu-item]").first()).toBeDisabled();
  // The first till still edits.
  await first.getByTestId("qty-up").click();
  await expect(second.getByTestId("qty")).toHaveText("2");

  // While it is open, the first till renews its lock (every 15 s).
  await expect
    .poll(
      async () =>
        (await cluster.committed()).filter((e) => e.aggregateId === orderId && e.type === "order.lock.renew")
          .length,
      { timeout: 30_000, intervals: [1_000] },
    )
    .toBeGreaterThan(0);
  await expect(second.getByTestId("locked-by")).toContainText("Locked by till-1");

  await first.getByTestId("close-order").click();
  await expect(second.getByTestId("locked-by")).toHaveCount(0);
  await expect(second.getByTestId("qty-up")).toBeEnabled();
  await second.getByTestId("qty-up").click();
  await expect(second.getByTestId("qty")).toHaveText("3");
  await settled(second);
  const order = await cluster.order(orderId);
  expect(Number(order?.items[0]?.quantity)).toBe(3);
  expect(order?.lock?.holder).toBe("till-2");
  await expect(second.getByTestId("refused")).toHaveCount(0);
});
