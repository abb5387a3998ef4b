// Kitchen (KDS) and bar (BDS) boards: open tickets from the committed stream, oldest
// first, with their age; the kitchen acknowledges then completes, the bar completes;
// a done ticket is bumped to the history row.

import type { Device } from "../device";
import type { TicketKind, TicketView } from "../model";
import { age } from "./format";
import { useNow } from "./hooks";

/** How many bumped tickets the history row keeps. */
const HISTORY = 12;
/** When each ticket first appeared on this screen (page time, ms): shown as
 * `data-shown-at`, so a test can measure till → kitchen latency. */
const shownAt = new Map<string, number>();

export function Tickets({ device, kind }: { device: Device; kind: TicketKind }) {
  useNow(1_000);
  const all = [...device.view.tickets.values()].filter((t) => t.kind === kind);
  const open = all
    .filter((t) => t.status !== "done")
    .sort((a, b) => (a.createdAt || Number.MAX_SAFE_INTEGER) - (b.createdAt || Number.MAX_SAFE_INTEGER));
  const history = all
    .filter((t) => t.status === "done")
    .sort((a, b) => b.doneAt - a.doneAt)
    .slice(0, HISTORY);
  return (
    <div class="board" data-testid={`${kind}-board`}>
      <h2>{kind === "kds" ? "Kitchen" : "Bar"}</h2>
      {open.length === 0 && <p class="none">No open tickets.</p>}
      <div class="cards">
        {open.map((t) => (
          <Card key={t.key} device={device} ticket={t} />
        ))}
      </div>
      <h3>History</h3>
      <div class="history" data-testid="history">
        {history.map((t) => (
          <span class="bumped" data-testid="bumped" data-ticket-id={t.id}>
            Table {tableOf(device, t)} · {t.items.map((i) => `${i.quantity}× ${i.name}`).join(", ")}
          </span>
        ))}
      </div>
    </div>
  );
}

function tableOf(device: Device, t: TicketView): string {
  return device.view.orders.get(t.orderId)?.tableNumber || t.tableNumber || "–";
}

function Card({ device, ticket }: { device: Device; ticket: TicketView }) {
  if (!shownAt.has(ticket.key)) shownAt.set(ticket.key, Date.now());
  const ageMs = ticket.createdAt ? device.hubNow() - ticket.createdAt : 0;
  const late = ageMs > 10 * 60_000;
  const follow = (type: string) =>
    device.append([
      { aggregateType: ticket.kind, aggregateId: ticket.id, type, payload: { orderId: ticket.orderId } },
    ]);
  return (
    <article
      class={`card card-${ticket.status}${late ? " late" : ""}`}
      data-testid="ticket"
      data-ticket-id={ticket.id}
      data-order-id={ticket.orderId}
      data-status={ticket.status}
      data-shown-at={shownAt.get(ticket.key)}
    >
      <header>
        <strong>Table {tableOf(device, ticket)}</strong>
        <span class="age" data-testid="age" title="time since the ticket was sent">
          {ticket.createdAt ? age(ageMs) : "sending"}
        </span>
      </header>
      {ticket.station && <p class="station">{ticket.station}</p>}
      <ul>
        {ticket.items.map((i) => (
          <li>
            <b>{i.quantity}×</b> {i.name}
            {i.notes && <em> — {i.notes}</em>}
          </li>
        ))}
      </ul>
      <footer>
        {ticket.kind === "kds" && ticket.status === "created" && (
          <button class="primary" data-testid="ack" onClick={() => follow("kds.ticket.ack")}>
            Start
          </button>
        )}
        {(ticket.kind === "bds" || ticket.status === "acked") && (
          <button class="primary" data-testid="done" onClick={() => follow(`${ticket.kind}.ticket.done`)}>
            Done
          </button>
        )}
      </footer>
    </article>
  );
}
