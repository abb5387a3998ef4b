import { render } from "preact";
import { App } from "./ui/app";
import "./style.css";

const root = document.getElementById("app");
if (root) render(<App />, root);

// Keep the app itself for offline reloads: the service worker answers from this cache
// when no hub serves the page. The page fills the cache with what it loaded (the first
// load happens before the worker controls the page).
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker
    .register("/sw.js")
    .then(() => navigator.serviceWorker.ready)
    .then(async () => {
      const assets = [
        "/",
        ...[...document.querySelectorAll<HTMLScriptElement>("script[src]")].map((s) => s.src),
        ...[...document.querySelectorAll<HTMLLinkElement>("link[rel=stylesheet], link[rel=modulepreload], link[rel=icon], link[rel=manifest]")].map(
          (l) => l.href,
        ),
      ];
      const cache = await caches.open("pos-hub-app-v1");
      await cache.addAll(assets);
      document.documentElement.dataset.offlineReady = "true";
    })
    .catch((err: unknown) => console.warn("the app will not open offline:", err));
}
