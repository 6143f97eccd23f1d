// The bulk file reader against a file the real server wrote (test/fixtures, made by
// scripts/make-bulk-fixture.ts with the Rust writer, format version 2): records and typed
// values equal to a paged sync's, checksum checked against the meta table and BulkReady;
// altered files refused with the reason; and the downloader's resume, restart, typed
// refusals and retries against a scripted fetch.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { BulkFileError, decodeFields, downloadBulkFile, readBulkFile, sqlJsLoader } from "../src/bulk.js";
import type { BulkFileExpectation } from "../src/bulk.js";
import { RecordSchema } from "../src/gen/syncline/v1/common_pb.js";
import { HttpError } from "../src/http.js";
import type { FetchLike } from "../src/http.js";
import { BlobRef, toValues } from "../src/values.js";
import { fixtureRecord } from "./fixture-records.js";
import type { FixtureRecord } from "./fixture-records.js";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
const fileBytes = new Uint8Array(readFileSync(join(fixtures, "account-bulk-v2.sqlite")));
const announced = JSON.parse(readFileSync(join(fixtures, "account-bulk-v2.json"), "utf8")) as {
  source: string;
  key: string;
  sequence: string;
  recordCount: string;
  checksum: string;
  records: FixtureRecord[];
};
const expected: BulkFileExpectation = {
  source: announced.source,
  key: announced.key,
  sequence: BigInt(announced.sequence),
  recordCount: BigInt(announced.recordCount),
  checksum: BigInt(announced.checksum),
};
const loadSqlJs = sqlJsLoader();

/** Returns the fixture changed by `sql` (run with sql.js on a copy). */
async function altered(sql: string): Promise<Uint8Array> {
  const SQL = await loadSqlJs();
  const db = new SQL.Database(fileBytes);
  db.run(sql);
  const bytes = db.export();
  db.close();
  return bytes;
}

describe("bulk file reader", () => {
  it("reads the server's file: the records and typed values of a paged sync, checksum verified", async () => {
    const contents = await readBulkFile(fileBytes, expected, loadSqlJs);
    expect(contents.sequence).toBe(expected.sequence);
    expect(contents.recordCount).toBe(22n);
    expect(contents.checksum).toBe(expected.checksum);
    expect(contents.createdMs).toBeGreaterThan(1_600_000_000_000);
    expect(contents.records.map(fixtureRecord)).toEqual(announced.records);
    const big = contents.records.find((record) => record.id === "zz-big");
    expect(big?.fields).toEqual({ n: 9007199254740993n, m: -9223372036854775808n, name: "größer 🚀" });
    const logo = contents.records.find((record) => record.id === "acc-10")?.fields.logo;
    expect(logo).toBeInstanceOf(Uint8Array);
  });

  it("refuses a file that is not the one announced or not intact, saying why", async () => {
    const cases: [string, Promise<unknown>, string][] = [
      ["another checksum announced", readBulkFile(fileBytes, { ...expected, checksum: expected.checksum + 1n }, loadSqlJs), "checksum"],
      ["another count announced", readBulkFile(fileBytes, { ...expected, recordCount: 21n }, loadSqlJs), "record_count"],
      ["another sequence announced", readBulkFile(fileBytes, { ...expected, sequence: 23n }, loadSqlJs), "sequence"],
      ["another partition announced", readBulkFile(fileBytes, { ...expected, key: "demo" }, loadSqlJs), "partition"],
      ["format version 1", altered("UPDATE meta SET value = '1' WHERE name = 'format_version'").then((bytes) => readBulkFile(bytes, expected, loadSqlJs)), "format_version"],
      ["a record's version changed", altered("UPDATE records SET version = version + 1 WHERE id = 'acc-1'").then((bytes) => readBulkFile(bytes, expected, loadSqlJs)), "checksum"],
      ["a record removed", altered("DELETE FROM records WHERE id = 'acc-2'").then((bytes) => readBulkFile(bytes, expected, loadSqlJs)), "record_count"],
      ["cut fields", altered("UPDATE records SET fields = x'1205' || fields WHERE id = 'acc-3'").then((bytes) => readBulkFile(bytes, expected, loadSqlJs)), "fields"],
      ["not SQLite", readBulkFile(new TextEncoder().encode("<html>proxy error</html>"), expected, loadSqlJs), "not_sqlite"],
    ];
    for (const [what, reading, problem] of cases) {
      const error = await reading.then(
        () => undefined,
        (failure: unknown) => failure,
      );
      expect(error, what).toBeInstanceOf(BulkFileError);
      expect((error as BulkFileError).problem, what).toBe(problem);
      expect((error as BulkFileError).code, what).toBe("PROTOCOL");
    }
  });

  it("decodes blob references in the fields column as BlobRef", () => {
    const photo = new BlobRef("ab".repeat(32), 1234n, "image/png", "face.png");
    const column = toBinary(RecordSchema, create(RecordSchema, { fields: toValues({ photo, ratio: Number.NaN }) }));
    const fields = decodeFields("r", column);
    expect(fields.photo).toBeInstanceOf(BlobRef);
    expect((fields.photo as BlobRef).equals(photo)).toBe(true);
    expect(Number.isNaN(fields.ratio)).toBe(true);
  });
});

/** A scripted `fetch`: each call gets the next answer; requests are recorded. */
function scripted(answers: ((init: RequestInit | undefined) => Response | Promise<Response>)[]): { fetch: FetchLike; requests: Record<string, string>[] } {
  const requests: Record<string, string>[] = [];
  const fetch: FetchLike = (_input, init) => {
    requests.push({ ...(init?.headers as Record<string, string>) });
    const answer = answers.shift();
    if (!answer) throw new Error("no more answers");
    return Promise.resolve(answer(init));
  };
  return { fetch, requests };
}

/** A response whose body breaks after `bytes` bytes. */
function cutAfter(body: Uint8Array, bytes: number, headers: Record<string, string>, status = 200): Response {
  let sent = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent) {
        controller.error(new Error("connection reset"));
        return;
      }
      sent = true;
      controller.enqueue(body.slice(0, bytes));
    },
  });
  return new Response(stream, { status, headers });
}

describe("bulk file download", () => {
  const body = fileBytes;
  const total = body.length;
  const fast = { backoff: { initialMs: 1, maxMs: 2 } };

  it("resumes a cut download with Range and gets the same bytes", async () => {
    const { fetch, requests } = scripted([
      () => cutAfter(body, 1000, { "content-length": String(total) }),
      () => new Response(body.slice(1000), { status: 206, headers: { "content-range": `bytes 1000-${total - 1}/${total}` } }),
    ]);
    const progress: number[] = [];
    const downloaded = await downloadBulkFile("http://x/v1/bulk/f", "tok", { fetch, ...fast, onProgress: (bytes) => progress.push(bytes) });
    expect(downloaded.bytes).toEqual(body);
    expect(downloaded.resumed).toBe(1);
    expect(requests[0]).toEqual({ authorization: "Bearer tok" });
    expect(requests[1]).toEqual({ authorization: "Bearer tok", range: "bytes=1000-" });
    expect(progress.at(-1)).toBe(total);
  });

  it("starts over when the server answers a range with the whole file (200)", async () => {
    const { fetch } = scripted([() => cutAfter(body, 500, { "content-length": String(total) }), () => new Response(body.slice(), { status: 200, headers: { "content-length": String(total) } })]);
    const downloaded = await downloadBulkFile("http://x/f", "tok", { fetch, ...fast });
    expect(downloaded.bytes).toEqual(body);
    expect(downloaded.restarted).toBe(1);
  });

  it("fails at once with a typed error on 401 and 403, and retries 503", async () => {
    for (const [status, code] of [[401, "UNAUTHENTICATED"], [403, "FORBIDDEN"], [404, "NOT_FOUND"]] as const) {
      const { fetch, requests } = scripted([() => new Response(JSON.stringify({ code: "x", message: "no" }), { status }), () => new Response(body)]);
      const error = await downloadBulkFile("http://x/f", "tok", { fetch, ...fast }).catch((failure: unknown) => failure);
      expect(error).toBeInstanceOf(HttpError);
      expect(error).toMatchObject({ code, status });
      expect(requests).toHaveLength(1);
    }
    const { fetch, requests } = scripted([() => new Response("busy", { status: 503 }), () => Promise.reject(new TypeError("network")), () => new Response(body.slice())]);
    expect((await downloadBulkFile("http://x/f", "tok", { fetch, ...fast })).bytes).toEqual(body);
    expect(requests).toHaveLength(3);
    const failing = scripted(Array.from({ length: 3 }, () => () => new Response("busy", { status: 503 })));
    await expect(downloadBulkFile("http://x/f", "tok", { fetch: failing.fetch, ...fast, maxAttempts: 3 })).rejects.toMatchObject({ code: "UNAVAILABLE" });
  });
});
