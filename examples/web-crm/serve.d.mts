import type { Server } from "node:http";

/** Bundles the example app and serves it on 127.0.0.1:`port` (0: any free port). */
export function serveExample(port?: number): Promise<Server>;
