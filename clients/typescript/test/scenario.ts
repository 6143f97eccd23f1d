// The offline-changes scenario shared by the Node and browser end-to-end tests: 100 creates,
// updates and deletes (some on records created offline, contacts referencing accounts
// created offline), and the check that the backend holds exactly their effects once.
import { expect } from "vitest";
import type { SourceView } from "../src/source.js";
import type { SyncRecord } from "../src/values.js";

/** The part of a client the scenario writes through. */
export interface Writer {
  create(source: string, fields: SyncRecord["fields"]): { record: SyncRecord | undefined };
  update(source: string, id: string, fields: SyncRecord["fields"]): unknown;
  delete(source: string, id: string): unknown;
}

/** What the scenario did, for the check. */
export interface OfflinePlan {
  created: { n: number; tempId: string; deleted: boolean; edited: boolean }[];
  seeded: string[];
  changes: number;
}

/**
 * Makes the 100 changes through `writer`; `seeded` are 30 ids of accounts the backend has.
 * Self-contained (no imports used inside), so a browser test can run it in the page.
 */
export function makeOfflineChanges(writer: Writer, seeded: string[]): OfflinePlan {
  const created: OfflinePlan["created"] = [];
  let changes = 0;
  for (let n = 0; n < 35; n += 1) {
    const { record } = writer.create("Account", { name: `offline-${n}`, employees: BigInt(n), active: n % 2 === 0 });
    created.push({ n, tempId: record?.id ?? "", deleted: false, edited: false });
    changes += 1;
  }
  for (const entry of created.slice(0, 20)) {
    writer.update("Account", entry.tempId, { name: `offline-${entry.n}-edited` });
    entry.edited = true;
    changes += 1;
  }
  for (const entry of created.slice(20, 30)) {
    writer.delete("Account", entry.tempId);
    entry.deleted = true;
    changes += 1;
  }
  for (const entry of created.slice(30, 35)) {
    writer.create("Contact", { name: `contact-of-${entry.n}`, account_id: entry.tempId });
    changes += 1;
  }
  for (const id of seeded.slice(0, 20)) {
    writer.update("Account", id, { name: `${id}-edited-offline` });
    changes += 1;
  }
  for (const id of seeded.slice(20, 30)) {
    writer.delete("Account", id);
    changes += 1;
  }
  return { created, seeded, changes };
}

/** Checks that `accounts` and `contacts` (a fresh device's) hold each effect of `plan` exactly once. */
export function checkOfflineEffects(plan: OfflinePlan, accounts: SourceView, contacts: SourceView): void {
  expect(plan.changes).toBe(100);
  for (const entry of plan.created) {
    const name = entry.edited ? `offline-${entry.n}-edited` : `offline-${entry.n}`;
    expect(accounts.query({ name }), name).toHaveLength(entry.deleted ? 0 : 1);
    if (entry.edited) expect(accounts.query({ name: `offline-${entry.n}` })).toHaveLength(0);
  }
  for (const id of plan.seeded.slice(0, 20)) expect(accounts.get(id)?.fields.name).toBe(`${id}-edited-offline`);
  for (const id of plan.seeded.slice(20, 30)) expect(accounts.get(id)).toBeUndefined();
  for (const entry of plan.created.slice(30, 35)) {
    const [account] = accounts.query({ name: `offline-${entry.n}` });
    expect(account?.id.startsWith("tmp-")).toBe(false);
    expect(contacts.query({ name: `contact-of-${entry.n}` }).map((contact) => contact.fields.account_id)).toEqual([account?.id]);
  }
  expect(accounts.records().some((record) => record.id.startsWith("tmp-"))).toBe(false);
}

/** Records as comparable text: id, version and fields, sorted by id. */
export function snapshot(records: readonly SyncRecord[]): string[] {
  return records.map((record) =>
    JSON.stringify([record.id, record.version.toString(), Object.entries(record.fields).sort().map(([name, value]) => [name, String(value)])]),
  );
}
