// pos-hub's service worker: keeps the app itself (index.html and its hashed assets) so
// that a till reloaded while no hub answers still opens, with its outbox and last known
// state from IndexedDB. API calls (POST) and live endpoints are never cached.
const CACHE = "pos-hub-app-v1";
const LIVE = new Set(["/status", "/healthz", "/metrics", "/sw.js"]);

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.add("/")).catch(() => undefined));
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin || LIVE.has(url.pathname)) {
    return;
  }
  if (request.mode === "navigate" || url.pathname === "/") {
    // The page: the hub's newest copy when it answers, the kept one when it does not.
    event.respondWith(
      fetch(request)
        .then((response) => {
          if (response.ok) {
            const copy = response.clone();
            caches.open(CACHE).then((cache) => cache.put("/", copy));
          }
          return response;
        })
        .catch(() => caches.match("/", { ignoreVary: true }).then((kept) => kept || Response.error())),
    );
    return;
  }
  // Assets have content hashes in their names: a kept copy is always right. The hub's
  // CORS layer answers `Vary: origin`, and a module script is fetched with an Origin
  // header that the page's cache.addAll did not send, so Vary is ignored.
  event.respondWith(
    caches.match(request, { ignoreVary: true }).then(
      (kept) =>
        kept ||
        fetch(request).then((response) => {
          if (response.ok) {
            const copy = response.clone();
            caches.open(CACHE).then((cache) => cache.put(request, copy));
          }
          return response;
        }),
    ),
  );
});
