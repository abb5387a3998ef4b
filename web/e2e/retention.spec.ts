// A till switched off while the store's retention deleted the history past its cursor
// comes back: Subscribe refuses its cursor (CURSOR_BELOW_RETENTION), and the page starts
// again from the live state at one seq (Bootstrap) instead of asking for the same refused
// cursor forever. Its order is still there, and it follows the log from then on.

import { expect, test } from "@playwright/test";
import { uuidv7 } from "../src/uuid";
import { Cluster, STORE, TENANT } from "./cluster";
import { addFromMenu, newOrder, settled, storedOrder } from "./pages";

const DAY_MS = 86_400_000;
const SEGMENTS = ["--history-segment-kib", "64"];

let cluster: Cluster;
test.beforeAll(async () => {
  // The events go in with the nodes' clocks ten days back: ten days later (clocks set
  // right) they are past a 7-day retention. Without tokens: a token issued today is not
  // valid yet on a clock ten days back.
  const args = [...SEGMENTS, `--clock-offset-ms=-${10 * DAY_MS}`];
  cluster = await Cluster.start(3, { open: true, args });
});
test.afterAll(() => cluster?.stop());

/** `n` stock counts by `device`, in the spec's JSON shape. */
function stockCounts(n: number, device: string): object[] {
  return Array.from({ length: n }, (_, i) => ({
    eventId: uuidv7(),
    tenantId: TENANT,
    storeId: STORE,
    aggregateType: "inventory",
    aggregateId: "FRIES",
    version: 1,
    type: "inventory.adjusted",
    at: new Date().toISOString(),
    actor: { deviceId: device },
    clock: { lamport: 1_000 + i, deviceId: device },
    payload: { sku: "FRIES", delta: 1, reason: "count" },
  }));
}

test("a till whose cursor retention passed starts again from the live state", async ({ browser }) => {
  const context = await browser.newContext();
  const till = await context.newPage();
  await till.goto(cluster.url(1));
  await till.getByText("Dev hub without tokens").click();
  await till.getByTestId("dev-device").fill("till-1");
  await till.getByTestId("dev-pair").click();
  await expect(till.getByTestId("connection")).toHaveAttribute("data-phase", "online", { timeout: 30_000 });
  const orderId = await newOrder(till, "21");
  await addFromMenu(till, "FRIES");
  await settled(till);
  const switchedOffAt = (await storedOrder(till, orderId)).cursor;
  await till.close();

  // The store goes on without the till: enough events for several history files.
  cluster.appendJson(stockCounts(1_500, "stock-1"), "stock-1", "manager");
  const hello = await cluster.api().hello({ deviceId: "e2e-checker" }, { timeoutMs: 5_000 });

  // Ten days later: archived behind the last 50 events, kept 7 days.
  cluster.extraArgs = SEGMENTS;
  for (const id of [1, 2, 3]) {
    cluster.kill(id);
    cluster.startNode(id);
  }
  await cluster.waitHealthy();
  // The first commit after a whole-group restart can outlast the CLI's 5 s on a loaded
  // machine; a mark at the same seq again is accepted, so it is simply asked again.
  await expect
    .poll(() => {
      try {
        return cluster.archiveMark(hello.lastSeq - 50n, 7);
      } catch (err) {
        return String(err);
      }
    }, { timeout: 60_000, intervals: [1_000] })
    .toContain("archived through seq");
  for (const id of [1, 2, 3]) {
    await expect
      .poll(async () => (await cluster.firstHeld(id)) > BigInt(switchedOffAt) + 1n, { timeout: 40_000 })
      .toBe(true);
  }

  // The till comes back on the same browser profile: its copy is below retention.
  const page = await context.newPage();
  await page.goto(cluster.url(1));
  await expect(page.getByTestId("connection")).toHaveAttribute("data-phase", "online", { timeout: 30_000 });
  await expect
    .poll(async () => (await storedOrder(page, orderId)).cursor, { timeout: 30_000 })
    .toBeGreaterThanOrEqual(Number(hello.lastSeq));
  await expect(page.locator(`[data-testid=order-row][data-table="21"]`)).toHaveCount(1);
  await expect(page.getByTestId("refused")).toHaveCount(0);
  await expect(page.getByTestId("auth-error")).toHaveCount(0);

  // And it follows on: a new order goes in and settles.
  const next = await newOrder(page, "22");
  await settled(page);
  expect((await storedOrder(page, next)).status).toBe("active");
});
