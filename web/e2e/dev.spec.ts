// A hub that checks no tokens (`serve --dev`): the pairing screen names the device and its
// role by hand, and the till works as with a token.

import { expect, test } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(1, { open: true });
});
test.afterAll(() => cluster?.stop());

test("a device pairs without a token on an open hub and takes an order", async ({ page }) => {
  await page.goto(cluster.url(1));
  await page.getByText("Dev hub without tokens").click();
  await page.getByTestId("dev-device").fill("counter 1");
  await page.getByTestId("dev-pair").click();
  await expect(page.getByTestId("pair-problem")).toContainText("a device name is");
  await page.getByTestId("dev-device").fill("counter-1");
  await page.getByTestId("dev-pair").click();
  await expect(page.getByTestId("device-id")).toHaveText("counter-1 · till");
  const orderId = await newOrder(page, "4");
  await addFromMenu(page, "COFFEE");
  await settled(page);
  const order = await cluster.order(orderId);
  expect(order?.items.map((i) => i.sku)).toEqual(["COFFEE"]);
  const created = (await cluster.committed()).find((e) => e.aggregateId === orderId);
  expect(created?.actor?.deviceId).toBe("counter-1");
  expect([created?.tenantId, created?.storeId]).toEqual(["t-demo", "s-001"]);
});
