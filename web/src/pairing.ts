// Pairing a device: the token (or the pairing link `pos-hub token issue --pair-url`
// prints) names the device, its role and the store; the hub checks it on Hello.

import { Code, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Hub } from "./gen/pos/v1/hub_pb";
import type { Pairing } from "./db";
import { authErrorOf, describe, isNodeFailure } from "./hub";

const ROLES = ["till", "kds", "bds", "manager", "admin"];

/** The token in a pasted token or pairing link (`…/#/pair/<token>`). */
export function tokenFrom(input: string): string {
  const text = input.trim();
  const at = text.indexOf("#/pair/");
  return (at >= 0 ? text.slice(at + "#/pair/".length) : text).trim();
}

/** Reads a token's claims (the hub verifies its signature; the page only needs to know
 * which device it names). Throws an error that says what is wrong with it. */
export function pairingFrom(token: string): Pairing {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("this is not a pos-hub token: a token has three dot-separated parts");
  let claims: Record<string, unknown>;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    claims = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    throw new Error("this is not a pos-hub token: its claims are not base64url JSON");
  }
  const text = (k: string) => (typeof claims[k] === "string" ? (claims[k] as string) : "");
  if (text("aud") !== "pos-hub") throw new Error(`this token is not for pos-hub (audience ${JSON.stringify(claims.aud)})`);
  if (!text("sub") || !text("tenantId") || !text("storeId")) {
    throw new Error("this token does not name a device, tenant and store");
  }
  if (!ROLES.includes(text("role"))) throw new Error(`this token's role ${JSON.stringify(claims.role)} is unknown`);
  return {
    token,
    deviceId: text("sub"),
    role: text("role"),
    tenantId: text("tenantId"),
    storeId: text("storeId"),
    open: false,
  };
}

/** A device on a hub that runs without tokens (`serve --dev`). */
export function devPairing(deviceId: string, role: string, tenantId: string, storeId: string): Pairing {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(deviceId)) {
    throw new Error("a device name is 1-64 letters, digits, '.', '_' or '-'");
  }
  if (!ROLES.includes(role)) throw new Error(`unknown role ${role}`);
  return { token: "", deviceId, role, tenantId, storeId, open: true };
}

export type Check = { ok: true } | { ok: false; auth: boolean; code: string; message: string };

/** Asks this page's node whether it accepts the token (`null`: no token). A hub that does
 * not answer is not a refusal: a device may be paired while the hub is down. */
export async function checkWithHub(token: string | null, deviceId: string): Promise<Check> {
  const client = createClient(
    Hub,
    createGrpcWebTransport({
      baseUrl: location.origin,
      interceptors: [
        (next) => (req) => {
          if (token) req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ],
    }),
  );
  try {
    await client.hello({ deviceId }, { timeoutMs: 3_000 });
    return { ok: true };
  } catch (err) {
    const auth = authErrorOf(err);
    if (auth) return { ok: false, auth: true, code: Code[auth.code], message: auth.message };
    if (isNodeFailure(err)) return { ok: true };
    return { ok: false, auth: false, code: "", message: describe(err) };
  }
}
