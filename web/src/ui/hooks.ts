import { useEffect, useState } from "preact/hooks";
import type { Device } from "../device";

/** Re-renders whenever the device's state changes. */
export function useDevice(device: Device): number {
  const [tick, setTick] = useState(0);
  useEffect(() => device.onChange(() => setTick((t) => t + 1)), [device]);
  return tick;
}

/** The current time, refreshed every `everyMs` (for ages and lock timers). */
export function useNow(everyMs = 1_000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

/** The hash route, split on '/': `#/till/o-1` → ["till", "o-1"]. */
export function useRoute(): string[] {
  const read = () => location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function go(...parts: string[]): void {
  location.hash = "#/" + parts.map(encodeURIComponent).join("/");
}

/** `go`, replacing the current history entry: a pairing link's token does not stay in
 * the browser's history. */
export function replaceRoute(...parts: string[]): void {
  history.replaceState(null, "", "#/" + parts.map(encodeURIComponent).join("/"));
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}
