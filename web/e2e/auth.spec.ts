// A token the hub refuses gives a clear error screen that quotes the hub's reason.

import { expect, test } from "@playwright/test";
import { Cluster } from "./cluster";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(1);
});
test.afterAll(() => cluster?.stop());

test("an expired token shows the refusal, not a blank page", async ({ page }) => {
  await page.goto(`${cluster.url(1)}/#/pair/${cluster.expiredToken("till-9", "till")}`);
  await expect(page.getByTestId("auth-error")).toBeVisible();
  await expect(page.getByTestId("auth-message")).toContainText("expired");
  await page.getByTestId("pair-again").click();
  await expect(page.getByTestId("pair")).toBeVisible();
});

test("a token for another store shows the refusal", async ({ page }) => {
  const token = cluster.token("till-1", "till", { store: "s-999" });
  await page.goto(`${cluster.url(1)}/#/pair/${token}`);
  await expect(page.getByTestId("auth-error")).toBeVisible();
  await expect(page.getByTestId("auth-message")).toContainText("realm t-demo/s-999");
});

test("something that is not a token is named as such", async ({ page }) => {
  await page.goto(cluster.url(1));
  await page.getByTestId("pair-token").fill("hello there");
  await page.getByTestId("pair-submit").click();
  await expect(page.getByTestId("pair-problem")).toContainText("not a pos-hub token");
});

test("a token that goes stale while the device is offline shows the refusal and keeps the edit", async ({ page }) => {
  // A device the log has never seen gets no offline grace once its token expires. Expired
  // 56 s ago, the token is still within the hub's 60 s leeway for another 4 s.
  const token = cluster.expiredToken("till-short", "till", 56);
  await page.goto(`${cluster.url(1)}/#/pair/${token}`);
  await expect(page.getByTestId("connection")).toHaveAttribute("data-phase", "online");
  // Offline, the till takes an order; by the time it is back, the token has expired.
  await page.context().setOffline(true);
  await page.getByTestId("new-table").fill("3");
  await page.getByTestId("new-order").click();
  await expect(page.getByTestId("order-editor")).toBeVisible();
  await page.waitForTimeout(5_000);
  await page.context().setOffline(false);
  await expect(page.getByTestId("auth-error")).toBeVisible();
  await expect(page.getByTestId("auth-message")).toContainText("expired");
  // Nothing reached the log; the order is still queued on the device for after re-pairing.
  const events = await cluster.committed();
  expect(events.filter((e) => e.actor?.deviceId === "till-short")).toHaveLength(0);
  const queued = await page.evaluate(
    () =>
      new Promise<string[]>((resolve, reject) => {
        const open = indexedDB.open("pos-hub");
        open.onsuccess = () => {
          const all = open.result.transaction("outbox").objectStore("outbox").getAll();
          all.onsuccess = () => resolve(all.result.map((e: { type: string }) => e.type));
          all.onerror = () => reject(all.error);
        };
        open.onerror = () => reject(open.error);
      }),
  );
  expect(queued.filter((t) => t === "order.created")).toHaveLength(1);
});
