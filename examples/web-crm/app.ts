// The example web app over the demo CRM: lists accounts and the user's contacts from the
// local replica (IndexedDB), edits them offline, shows other devices' changes live, and calls
// `crm.CloseDeal` over the socket. The device endpoint comes from `?url=` (default: the demo's).
import { IndexedDbStorage, SynclineClient } from "../../clients/typescript/src/index.js";
import type { Notification, SyncRecord } from "../../clients/typescript/src/index.js";

const ROWS = 50;
const params = new URLSearchParams(location.search);
const url = params.get("url") ?? "ws://127.0.0.1:7700/v1/sync";

const byId = (id: string): HTMLElement => document.getElementById(id) as HTMLElement;

function cell(row: HTMLTableRowElement, text: string): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = text;
  return td;
}

async function main(): Promise<void> {
  const storage = await IndexedDbStorage.open(params.get("db") ?? "syncline-web-crm");
  const client = await SynclineClient.open({
    url,
    credentials: { username: params.get("user") ?? "demo", password: params.get("password") ?? "demo" },
    sources: [{ source: "Account", pageSize: Number(params.get("pageSize") ?? 0), window: Number(params.get("window") ?? 4) }, "Contact"],
    storage,
    backoff: { initialMs: Number(params.get("backoffMs") ?? 500), maxMs: Number(params.get("backoffMaxMs") ?? 30_000) },
    device: { platform: "web", appVersion: "example" },
  });
  // For the browser tests and the curious: the client in the console.
  (window as unknown as { syncline: SynclineClient }).syncline = client;
  const accounts = client.source("Account");
  const contacts = client.source("Contact");
  const pending = (): Set<string> => new Set(client.pendingMutations.map((mutation) => mutation.linkedId ?? mutation.id));

  const renderAccounts = (): void => {
    const filter = (byId("filter") as HTMLInputElement).value.toLowerCase();
    const shown = accounts.query((record) => String(record.fields.name ?? "").toLowerCase().includes(filter)).slice(0, ROWS);
    const body = byId("accounts");
    body.replaceChildren();
    const waiting = pending();
    for (const account of shown) renderAccount(body as HTMLTableSectionElement, account, waiting.has(account.id));
    byId("account-count").textContent = `(${accounts.size})`;
  };

  const renderAccount = (body: HTMLTableSectionElement, account: SyncRecord, isPending: boolean): void => {
    const row = body.insertRow();
    row.dataset.id = account.id;
    if (isPending) row.className = "pending";
    cell(row, account.id);
    const name = document.createElement("input");
    name.type = "text";
    name.value = String(account.fields.name ?? "");
    name.onchange = () => client.update("Account", account.id, { name: name.value });
    row.insertCell().append(name);
    cell(row, String(account.fields.industry ?? ""));
    cell(row, String(account.fields.annual_revenue ?? ""));
    const close = document.createElement("button");
    close.textContent = "Close deal";
    close.onclick = async () => {
      try {
        const reply = await client.call("crm", "CloseDeal", JSON.stringify({ account_id: account.id, amount: 5000 }));
        close.textContent = `closed: ${new TextDecoder().decode(reply)}`;
      } catch (error) {
        close.textContent = `failed: ${String(error)}`;
      }
    };
    row.insertCell().append(close);
  };

  const renderContacts = (): void => {
    const body = byId("contacts") as HTMLTableSectionElement;
    body.replaceChildren();
    for (const contact of contacts.records().slice(0, ROWS)) {
      const row = body.insertRow();
      cell(row, String(contact.fields.name ?? ""));
      cell(row, String(contact.fields.email ?? ""));
      cell(row, String(contact.fields.account_id ?? ""));
    }
    byId("contact-count").textContent = `(${contacts.size})`;
  };

  const renderStatus = (notification?: Notification): void => {
    const last = notification?.type === "sync" ? ` · ${notification.status}` : "";
    byId("status").textContent = `${client.connection}${last} · ${client.pendingMutations.length} pending`;
  };

  accounts.subscribe(renderAccounts);
  contacts.subscribe(renderContacts);
  client.onNotification(renderStatus);
  // Marks the first page of the first sync run (the IndexedDB benchmark reads it).
  const stopMarking = client.onNotification((notification) => {
    if (notification.type === "sync" && notification.status === "in_progress") {
      performance.mark("syncline:first-page");
      stopMarking();
    }
  });
  byId("filter").oninput = renderAccounts;
  byId("add-account").onclick = () => client.create("Account", { name: `New account ${new Date().toISOString()}` });
  renderAccounts();
  renderContacts();
  renderStatus();
  setInterval(() => renderStatus(), 1000);
}

void main();
