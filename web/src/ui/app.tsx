// The app's frame: pairing, the refused-token screen, the top bar with the connection
// state, the offline/failover banner, refused edits, and the screen the route names.

import { useEffect, useState } from "preact/hooks";
import { Db, type Pairing } from "../db";
import { Device } from "../device";
import { checkWithHub, devPairing, pairingFrom, tokenFrom } from "../pairing";
import { Dashboard } from "./dashboard";
import { go, replaceRoute, useDevice, useRoute } from "./hooks";
import { Tickets } from "./tickets";
import { Till } from "./till";

/** The screens a role works on (the hub enforces what each role may write). */
function screensOf(role: string): string[] {
  if (role === "kds") return ["kds", "dashboard"];
  if (role === "bds") return ["bds", "dashboard"];
  return ["till", "kds", "bds", "dashboard"];
}

const LABELS: Record<string, string> = { till: "Till", kds: "Kitchen", bds: "Bar", dashboard: "Dashboard" };

export function App() {
  const route = useRoute();
  const [db, setDb] = useState<Db>();
  const [pairing, setPairing] = useState<Pairing | null>();
  const [device, setDevice] = useState<Device>();
  const [fatal, setFatal] = useState<string>();

  useEffect(() => {
    Db.open()
      .then(async (opened) => {
        setDb(opened);
        setPairing((await opened.get<Pairing>("meta", "pairing")) ?? null);
      })
      .catch((err: unknown) => setFatal(`This browser's storage (IndexedDB) is not available: ${String(err)}`));
  }, []);

  useEffect(() => {
    if (!db || !pairing) return;
    let started: Device | undefined;
    let cancelled = false;
    Device.start(db, pairing)
      .then((d) => {
        if (cancelled) d.stop();
        else {
          started = d;
          setDevice(d);
        }
      })
      .catch((err: unknown) => setFatal(`The device could not start: ${String(err)}`));
    return () => {
      cancelled = true;
      started?.stop();
      setDevice(undefined);
    };
  }, [db, pairing]);

  if (fatal) return <Problem title="pos-hub cannot run in this browser" message={fatal} />;
  if (!db || pairing === undefined) return <p class="loading">Loading…</p>;
  const paired = (p: Pairing) => {
    setPairing(p);
    replaceRoute(screensOf(p.role)[0]);
  };
  if (route[0] === "pair" && route[1]) return <Pair db={db} token={route[1]} onPaired={paired} />;
  if (!pairing) return <Pair db={db} onPaired={paired} />;
  if (!device) return <p class="loading">Starting…</p>;
  return <Shell device={device} route={route} db={db} onUnpaired={() => setPairing(null)} />;
}

function Shell({ device, route, db, onUnpaired }: { device: Device; route: string[]; db: Db; onUnpaired: () => void }) {
  useDevice(device);
  const status = device.status();
  const screens = screensOf(device.pairing.role);
  const screen = screens.includes(route[0] ?? "") ? route[0] : screens[0];
  const unpair = async () => {
    await db.unpair();
    onUnpaired();
    go("");
  };
  if (status.authError) {
    return <TokenRefused code={status.authError.code} message={status.authError.message} onRepair={unpair} />;
  }
  return (
    <div class="shell">
      <header class="topbar">
        <span class="brand">pos-hub</span>
        <nav>
          {screens.map((s) => (
            <a href={`#/${s}`} class={s === screen ? "on" : ""} data-testid={`nav-${s}`}>
              {LABELS[s]}
            </a>
          ))}
        </nav>
        <span class="who" data-testid="device-id">
          {device.deviceId} · {device.pairing.role}
        </span>
        <span
          class={`conn conn-${status.phase}`}
          data-testid="connection"
          data-phase={status.phase}
          data-node={status.node}
          data-queued={status.queued}
          data-pending={status.pending}
          title={status.lastError ?? ""}
        >
          {phaseWord(status.phase)} · {status.node.replace(/^https?:\/\//, "")}
        </span>
        <button class="ghost small" onClick={unpair} title="forget this device's token">
          Unpair
        </button>
      </header>
      <Banner phase={status.phase} queued={status.queued} />
      {status.refused.length > 0 && (
        <ul class="refused" data-testid="refused">
          {status.refused.map((r) => (
            <li>
              <b>Not saved:</b> {r.type} on {r.aggregateId} — {r.message} <code>{r.code}</code>
              <button class="ghost small" onClick={() => device.dismiss(r.n)}>
                Dismiss
              </button>
            </li>
          ))}
        </ul>
      )}
      <main>
        {screen === "till" && <Till device={device} orderId={route[1]} />}
        {screen === "kds" && <Tickets device={device} kind="kds" />}
        {screen === "bds" && <Tickets device={device} kind="bds" />}
        {screen === "dashboard" && <Dashboard device={device} />}
      </main>
    </div>
  );
}

function phaseWord(phase: string): string {
  return phase === "online" ? "Online" : phase === "offline" ? "Offline" : phase === "reconnecting" ? "Switching hub" : "Connecting";
}

function Banner({ phase, queued }: { phase: string; queued: number }) {
  const edits = `${queued} ${queued === 1 ? "edit" : "edits"} queued`;
  if (phase === "offline") {
    return (
      <div class="banner offline" role="status" data-testid="offline-banner" data-queued={queued}>
        <b>Offline</b> — no hub answers. Keep working: {edits} on this device, sent as soon as a hub is back.
      </div>
    );
  }
  if (phase === "reconnecting") {
    return (
      <div class="banner failover" role="status" data-testid="failover-banner" data-queued={queued}>
        <b>Switching hub</b> — the hub stopped answering; moving to another node. {edits}.
      </div>
    );
  }
  return null;
}

function TokenRefused({ code, message, onRepair }: { code: string; message: string; onRepair: () => void }) {
  const why =
    code === "PermissionDenied"
      ? "The token is for another store (or does not allow this)."
      : "The token is expired, not valid yet, or not signed by this store's key.";
  return (
    <div class="problem-screen" data-testid="auth-error" role="alert">
      <h1>This device's token was refused</h1>
      <p class="why">{why}</p>
      <p class="hub-says">
        The hub says: <q data-testid="auth-message">{message}</q>
      </p>
      <p>Ask a manager for a new pairing link (`pos-hub token issue … --pair-url`), then pair again.</p>
      <button class="primary" onClick={onRepair} data-testid="pair-again">
        Pair again
      </button>
    </div>
  );
}

function Problem({ title, message }: { title: string; message: string }) {
  return (
    <div class="problem-screen" role="alert">
      <h1>{title}</h1>
      <p>{message}</p>
    </div>
  );
}

function Pair({ db, token, onPaired }: { db: Db; token?: string; onPaired: (p: Pairing) => void }) {
  const [input, setInput] = useState(token ?? "");
  const [problem, setProblem] = useState("");
  const [refused, setRefused] = useState<{ code: string; message: string }>();
  const [busy, setBusy] = useState(false);
  const [devName, setDevName] = useState("till-1");
  const [devRole, setDevRole] = useState("till");

  const pair = async (text: string) => {
    setProblem("");
    let pairing: Pairing;
    try {
      pairing = pairingFrom(tokenFrom(text));
    } catch (err) {
      setProblem((err as Error).message);
      return;
    }
    setBusy(true);
    const check = await checkWithHub(pairing.token, pairing.deviceId);
    setBusy(false);
    if (!check.ok) {
      if (check.auth) setRefused({ code: check.code, message: check.message });
      else setProblem(check.message);
      return;
    }
    await db.putMeta("pairing", pairing);
    onPaired(pairing);
  };

  const pairDev = async () => {
    setProblem("");
    try {
      const realm = await fetch("/status", { signal: AbortSignal.timeout(3_000) })
        .then((r) => r.json() as Promise<{ realm?: string }>)
        .then((s) => (s.realm ?? "").split("/"));
      const pairing = devPairing(devName.trim(), devRole, realm[0] ?? "", realm[1] ?? "");
      const check = await checkWithHub(null, pairing.deviceId);
      if (!check.ok) {
        setProblem(`This hub needs a token: ${check.message}`);
        return;
      }
      await db.putMeta("pairing", pairing);
      onPaired(pairing);
    } catch (err) {
      setProblem((err as Error).message);
    }
  };

  useEffect(() => {
    if (token) void pair(token);
  }, [token]);

  if (refused) {
    return (
      <TokenRefused
        code={refused.code}
        message={refused.message}
        onRepair={() => {
          setRefused(undefined);
          setInput("");
          go("");
        }}
      />
    );
  }
  return (
    <div class="pair" data-testid="pair">
      <h1>Pair this device</h1>
      <p>Paste the pairing link or token a manager made with `pos-hub token issue`.</p>
      <textarea
        data-testid="pair-token"
        rows={4}
        value={input}
        onInput={(e) => setInput(e.currentTarget.value)}
        placeholder="http://hub:4001/#/pair/eyJ…  or  eyJ…"
      />
      <button class="primary" disabled={busy || !input.trim()} onClick={() => pair(input)} data-testid="pair-submit">
        {busy ? "Checking…" : "Pair"}
      </button>
      {problem && (
        <p class="problem" data-testid="pair-problem">
          {problem}
        </p>
      )}
      <details class="dev">
        <summary>Dev hub without tokens (`serve --dev`)</summary>
        <label>
          Device name <input data-testid="dev-device" value={devName} onInput={(e) => setDevName(e.currentTarget.value)} />
        </label>
        <label>
          Role
          <select value={devRole} onChange={(e) => setDevRole(e.currentTarget.value)}>
            <option value="till">till</option>
            <option value="kds">kitchen (kds)</option>
            <option value="bds">bar (bds)</option>
            <option value="manager">manager</option>
          </select>
        </label>
        <button onClick={pairDev} data-testid="dev-pair">
          Use without a token
        </button>
      </details>
    </div>
  );
}
