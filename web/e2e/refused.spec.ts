// An edit the hub refuses is rolled back on the screen and listed for the cashier: a till
// that edits an order offline while another till takes it over comes back to find its
// edits refused, the other till's state shown, and nothing of its own in the log.

import { expect, test } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(3);
});
test.afterAll(() => cluster?.stop());

test("edits refused after a reconnect roll back and are shown", async ({ browser }) => {
  const first = await pairedPage(browser, cluster, "till-1", "till", 1);
  const second = await pairedPage(browser, cluster, "till-2", "till", 2);
  const orderId = await newOrder(first, "8");
  await addFromMenu(first, "FRIES");
  await settled(first);
  await first.getByTestId("close-order").click();
  // Closing releases the lock; wait until the hub has that (the release is queued a moment
  // after the click, so an empty outbox right after it proves nothing).
  await expect.poll(async () => (await cluster.order(orderId))?.lock?.holder ?? "").toBe("");
  await settled(first);

  // till-1 loses the network, opens the order (its lock is only queued) and edits it.
  await first.context().setOffline(true);
  await first.locator(`[data-testid=order-row][data-order-id="${orderId}"]`).click();
  await first.getByTestId("qty-up").click();
  await first.getByTestId("qty-up").click();
  await expect(first.getByTestId("qty")).toHaveText("3");
  await expect(first.getByTestId("offline-banner")).toHaveAttribute("data-queued", "2");

  // Meanwhile till-2 takes the order and adds a drink.
  await second.locator(`[data-testid=order-row][data-order-id="${orderId}"]`).click();
  await addFromMenu(second, "COLA");
  await settled(second);

  // Back online: the hub refuses till-1's edits (the order moved on without them).
  await first.context().setOffline(false);
  const refused = first.getByTestId("refused");
  await expect(refused).toBeVisible({ timeout: 30_000 });
  await expect(refused).toContainText("order.updated");
  await expect(refused.locator("li")).toHaveCount(2);
  await settled(first);
  await expect(first.locator("[data-testid=line][data-sku=FRIES]")).toHaveAttribute("data-quantity", "1");
  await expect(first.locator("[data-testid=line][data-sku=COLA]")).toHaveAttribute("data-quantity", "1");
  await expect(first.getByTestId("locked-by")).toContainText("Locked by till-2");

  const log = (await cluster.committed()).filter((e) => e.aggregateId === orderId);
  const updates = log.filter((e) => e.type === "order.updated").map((e) => e.actor?.deviceId);
  expect(updates).toEqual(["till-1", "till-2"]);
  // Dismissed one by one (each click waits for the list to shrink, so the next does not
  // land on the item being removed), the list goes away.
  for (let left = 1; left >= 0; left--) {
    await refused.getByRole("button", { name: "Dismiss" }).first().click();
    if (left > 0) await expect(refused.locator("li")).toHaveCount(left);
  }
  await expect(refused).toHaveCount(0);
});
