// The group at a glance: every node's role, term, log position, replication lag (as the
// leader sees it), events per second and health, polled from each node's /status and
// /healthz once a second, plus what this device knows from Hello.

import { useEffect, useRef, useState } from "preact/hooks";
import type { Device } from "../device";
import { nodeUrl } from "../hub";

const POLL_MS = 1_000;

interface NodeStatus {
  nodeId: number;
  role: string;
  term: number;
  leaderId: number | null;
  lastSeq: number | null;
  commitIndex: number;
  appliedIndex: number;
  subscribers: number;
  version: string;
  realm: string;
  peers: { id: number; clientAddr: string; lag: number | null }[];
}

interface Row {
  url: string;
  status?: NodeStatus;
  health: "ok" | "no leader" | "down";
  eventsPerS?: number;
}

export function Dashboard({ device }: { device: Device }) {
  const [rows, setRows] = useState<Row[]>([]);
  const last = useRef(new Map<string, { seq: number; at: number }>());
  /** Nodes named by another node's /status (its peers), polled from the next round on. */
  const peers = useRef(new Set<string>());

  useEffect(() => {
    let stopped = false;
    const poll = async () => {
      const urls = new Set([...device.link.known, ...peers.current]);
      for (const n of device.status().nodes) urls.add(nodeUrl(n.clientAddr));
      const next = await Promise.all([...urls].map((url) => probe(url, last.current)));
      for (const r of next) {
        if (r.status) for (const p of r.status.peers) peers.current.add(nodeUrl(p.clientAddr));
      }
      if (!stopped) setRows(next.sort((a, b) => (a.status?.nodeId ?? 99) - (b.status?.nodeId ?? 99)));
    };
    void poll();
    const timer = setInterval(poll, POLL_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [device]);

  const leader = rows.find((r) => r.status?.role === "leader")?.status;
  const lagOf = (id: number | undefined) => leader?.peers.find((p) => p.id === id)?.lag;
  const s = device.status();
  return (
    <div class="dashboard" data-testid="dashboard">
      <h2>Cluster</h2>
      <p class="summary">
        Leader <b data-testid="leader">{leader ? `node ${leader.nodeId}` : "none"}</b> · term{" "}
        <b>{leader?.term ?? "–"}</b> · realm {leader?.realm ?? "–"} · this device follows{" "}
        <b>{s.node.replace(/^https?:\/\//, "")}</b> at seq {s.cursor}
      </p>
      <table>
        <thead>
          <tr>
            <th>Node</th>
            <th>Address</th>
            <th>Role</th>
            <th>Term</th>
            <th>Last seq</th>
            <th>Applied index</th>
            <th>Lag</th>
            <th>Events/s</th>
            <th>Subscribers</th>
            <th>Health</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr data-testid="node-row" data-health={r.health} class={`health-${r.health.replace(" ", "-")}`}>
              <td>{r.status ? r.status.nodeId : "?"}</td>
              <td>{r.url.replace(/^https?:\/\//, "")}</td>
              <td data-testid="node-role">{r.status?.role ?? "–"}</td>
              <td>{r.status?.term ?? "–"}</td>
              <td>{r.status?.lastSeq ?? "–"}</td>
              <td>{r.status?.appliedIndex ?? "–"}</td>
              <td>{r.status?.role === "leader" ? "–" : (lagOf(r.status?.nodeId) ?? "–")}</td>
              <td data-testid="events-per-s">{r.eventsPerS === undefined ? "–" : r.eventsPerS.toFixed(1)}</td>
              <td>{r.status?.subscribers ?? "–"}</td>
              <td>
                <span class={`dot dot-${r.health.replace(" ", "-")}`} /> {r.health}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

async function probe(url: string, last: Map<string, { seq: number; at: number }>): Promise<Row> {
  try {
    const [status, health] = await Promise.all([
      fetch(`${url}/status`, { signal: AbortSignal.timeout(900) }).then((r) => r.json() as Promise<NodeStatus>),
      fetch(`${url}/healthz`, { signal: AbortSignal.timeout(900) }).then((r) => r.ok),
    ]);
    const now = performance.now();
    const seq = status.lastSeq ?? 0;
    const before = last.get(url);
    last.set(url, { seq, at: now });
    const eventsPerS = before && now > before.at ? ((seq - before.seq) * 1000) / (now - before.at) : undefined;
    return { url, status, health: health ? "ok" : "no leader", eventsPerS };
  } catch {
    last.delete(url);
    return { url, health: "down" };
  }
}
