// A till on node 1 sends an order for table 5 to the kitchen; the KDS on node 2 shows the
// ticket, acks and completes it, and the till sees each status change. The bar and the
// dashboard are exercised (and photographed) on the way.

import { expect, test } from "@playwright/test";
import { Cluster } from "./cluster";
import { addFromMenu, newOrder, pairedPage, screenshot, settled, storedOrder } from "./pages";

let cluster: Cluster;
test.beforeAll(async () => {
  cluster = await Cluster.start(3);
});
test.afterAll(() => cluster?.stop());

test("a till order reaches the kitchen screen on another node, and its status comes back", async ({ browser }) => {
  const till = await pairedPage(browser, cluster, "till-1", "till", 1);
  const kds = await pairedPage(browser, cluster, "kds-1", "kds", 2);
  const bds = await pairedPage(browser, cluster, "bds-1", "bds", 3);
  await expect(till.getByTestId("connection")).toHaveAttribute("data-node", cluster.url(1));
  await expect(kds.getByTestId("connection")).toHaveAttribute("data-node", cluster.url(2));
  await expect(kds.getByTestId("kds-board")).toBeVisible();

  const orderId = await newOrder(till, "5");
  await addFromMenu(till, "BURGER-CLASSIC");
  await addFromMenu(till, "FRIES");
  await expect(till.getByTestId("line")).toHaveCount(2);
  await settled(till);

  const sentAt = Date.now();
  await till.getByTestId("send").click();
  const card = kds.locator(`[data-testid=ticket][data-order-id="${orderId}"]`);
  await expect(card).toBeVisible();
  const shownAt = Number(await card.getAttribute("data-shown-at"));
  const latency = shownAt - sentAt;
  console.log(`till (node 1) → KDS (node 2): ticket shown ${latency} ms after the send`);
  // The spec's target is < 500 ms (measured above and reported); the bound asserted here
  // only catches a screen that does not follow the stream at all (a shared, noisy CI box
  // must not fail a correct build on timing).
  expect(latency).toBeGreaterThanOrEqual(0);
  expect(latency).toBeLessThan(5_000);
  await expect(card).toContainText("Table 5");
  await expect(card).toContainText("Classic burger");
  await expect(card).toContainText("Fries");

  const tillTicket = till.getByTestId("ticket-status").first();
  await expect(tillTicket).toHaveAttribute("data-status", "created");
  await card.getByTestId("ack").click();
  await expect(card).toHaveAttribute("data-status", "acked");
  await expect(tillTicket).toHaveAttribute("data-status", "acked");

  // A drink goes to the bar on node 3.
  await addFromMenu(till, "LEMONADE");
  await till.getByTestId("send").click();
  const drink = bds.locator(`[data-testid=ticket][data-order-id="${orderId}"]`);
  await expect(drink).toContainText("Lemonade");
  await screenshot(kds, "kds");
  await screenshot(bds, "bds");
  await screenshot(till, "till");
  await till.setViewportSize({ width: 390, height: 844 });
  await screenshot(till, "till-phone");
  await till.setViewportSize({ width: 1280, height: 800 });

  await card.getByTestId("done").click();
  await expect(tillTicket).toHaveAttribute("data-status", "done");
  await expect(card).toHaveCount(0);
  await expect(kds.getByTestId("bumped")).toHaveCount(1);
  await drink.getByTestId("done").click();
  await expect(bds.getByTestId("bumped")).toHaveCount(1);

  // The committed log holds the ticket's three events, once each.
  await settled(kds);
  const events = await cluster.committed();
  const ticketId = await till.getByTestId("ticket-status").first().getAttribute("data-ticket-id");
  const ticketEvents = events.filter((e) => e.aggregateType === "kds" && e.aggregateId === ticketId).map((e) => e.type);
  expect(ticketEvents).toEqual(["kds.ticket.created", "kds.ticket.ack", "kds.ticket.done"]);

  // Park it (it moves to the parked list), recall it, then pay.
  await till.getByTestId("park").click();
  await expect(till.getByTestId("order-status")).toHaveText("parked");
  await till.getByTestId("tab-parked").click();
  await expect(till.locator(`[data-testid=order-row][data-order-id="${orderId}"]`)).toBeVisible();
  await expect(till.getByTestId("qty-up").first()).toBeDisabled();
  await till.getByTestId("recall").click();
  await expect(till.getByTestId("order-status")).toHaveText("active");

  // Pay it: the amount must match the total.
  await till.getByTestId("pay").click();
  await till.getByTestId("pay-amount").fill("1.00");
  await expect(till.getByTestId("pay-problem")).toBeVisible();
  await expect(till.getByTestId("pay-confirm")).toBeDisabled();
  const total = (await cluster.order(orderId))?.total ?? 0n;
  await till.getByTestId("pay-amount").fill((Number(total) / 100).toFixed(2));
  await till.getByTestId("pay-confirm").click();
  await expect(till.getByTestId("order-status")).toHaveText("paid");
  await settled(till);
  const paid = await cluster.order(orderId);
  expect(paid?.payments.map((p) => Number(p.amount))).toEqual([Number(total)]);
  const lifecycle = (await cluster.committed())
    .filter((e) => e.aggregateId === orderId && ["order.parked", "order.reparked", "order.paid"].includes(e.type))
    .map((e) => e.type);
  expect(lifecycle).toEqual(["order.parked", "order.reparked", "order.paid"]);

  // The kitchen screen's stream carries order.paid as a redaction marker: its cursor
  // passes the payment's seq (no gap, no start over from 0) and it stores the order as
  // paid without the payments, which the till has.
  const paidSeq = Number(
    (await cluster.committed()).find((e) => e.aggregateId === orderId && e.type === "order.paid")?.seq ?? 0n,
  );
  expect(paidSeq).toBeGreaterThan(0);
  await expect.poll(async () => (await storedOrder(kds, orderId)).cursor).toBeGreaterThanOrEqual(paidSeq);
  const kitchenCopy = await storedOrder(kds, orderId);
  expect(kitchenCopy.status).toBe("paid");
  expect(kitchenCopy.payments).toEqual([]);
  await expect.poll(async () => (await storedOrder(till, orderId)).payments?.length).toBe(1);

  // The dashboard shows the three nodes and one leader, live.
  await till.getByTestId("nav-dashboard").click();
  await expect(till.getByTestId("node-row")).toHaveCount(3);
  await expect(till.locator("[data-testid=node-row][data-health=ok]")).toHaveCount(3);
  await expect(till.getByTestId("node-role").filter({ hasText: "leader" })).toHaveCount(1);
  // Live: after a second poll every node has an events/s figure.
  await expect(till.getByTestId("events-per-s")).toHaveText([/^\d+\.\d$/, /^\d+\.\d$/, /^\d+\.\d$/]);
  await screenshot(till, "dashboard");
});
