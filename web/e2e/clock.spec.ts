// A till whose clock ran far ahead of the store's (a store reset, an old bug) gets its
// edits refused for their clock; the app re-stamps them from the store's clock and sends
// them again instead of listing them as refused.

import { expect, test, type Page } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, settled } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(1);
});
test.afterAll(() => cluster?.stop());

test("edits refused for a clock that ran ahead are re-stamped, not refused", async ({ browser }) => {
  const page = await pairedPage(browser, cluster, "till-1", "till", 1);
  // The stored clock runs two million ahead; the app reads it when it loads.
  await setClock(page, 2_000_000);
  await page.reload();
  const orderId = await newOrder(page, "12");
  await addFromMenu(page, "FRIES");
  await settled(page);
  await expect(page.getByTestId("refused")).toHaveCount(0);
  const mine = (await cluster.committed()).filter((e) => e.aggregateId === orderId);
  expect(mine.map((e) => e.type)).toContain("order.created");
  for (const e of mine) expect(Number(e.clock?.lamport ?? 0n)).toBeLessThan(1_000_000);
  // The app's own clock went back with the re-stamp (without it, it would be past 2,000,000).
  expect(await setClock(page)).toBeLessThan(1_000_000);
});

/** Reads the app's stored Lamport clock, after writing `value` there if given. */
function setClock(page: Page, value?: number): Promise<number> {
  return page.evaluate(
    (value) =>
      new Promise<number>((resolve, reject) => {
        const open = indexedDB.open("pos-hub");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const t = open.result.transaction("meta", "readwrite");
          const meta = t.objectStore("meta");
          if (value !== undefined) meta.put(value, "lamport");
          const read = meta.get("lamport");
          t.oncomplete = () => {
            open.result.close();
            resolve(Number(read.result ?? 0));
          };
          t.onerror = () => reject(t.error);
        };
      }),
    value,
  );
}
