// The device protocol: what an app install and Syncline say to each other over one
// WebSocket.
//
// Transport: WebSocket at `/v1/sync`, subprotocol `syncline.v1`. Each binary frame is one
// encoded ClientFrame (device to server) or ServerFrame (server to device). A text frame
// carrying the canonical protobuf JSON mapping of the same message is accepted too, and the
// server then answers that connection in text frames (format of the first frame wins).
//
// Session: the first frame must be Hello; the server answers Welcome or Error (fatal) and
// closes. A connection without a successful Hello within the server's hello timeout
// (`device.hello_timeout_ms`, 10 s by default) gets Error TIMEOUT (fatal) and close 4408.
// Then the device subscribes to partitions and receives pages, state and live changes; it
// acks pages by cursor.
//
// Close codes the server uses, grouped by what the device should do. A fatal Error frame
// with the full explanation comes before every close the server starts except 1000, 1009,
// 1012 and the idle 4408; the close reason is a short form of it (at most 123 bytes, as
// RFC 6455 allows), so read the Error frame for the detail.
//
// Do not reconnect until something changes:
//   1000 normal            logout or client close: do not reconnect until the app asks
//   4001 unauthenticated   bad credentials or token (Error UNAUTHENTICATED): ask the user to
//                          log in again (a refused session token: log in with the password)
//   4003 forbidden         the device or user is locked (Error FORBIDDEN): do not reconnect;
//                          report the app locked until the user logs in again (with the
//                          password: a locked device's session tokens are no longer enough).
//                          Command frames may come before the Error: act on them (see Command)
//   4426 upgrade required  Hello.protocol_version is not spoken by this server (Error
//                          UNSUPPORTED_VERSION, whose message names the version it speaks):
//                          do not reconnect until the app is updated
// Reconnect with backoff:
//   1009 message too big   a frame exceeded Welcome.max_frame_bytes: a client bug, report it
//   4400 protocol error    before a successful Hello, a frame was not understood (Error
//                          BAD_REQUEST) or was not a Hello (Error UNAUTHENTICATED): a client
//                          bug, report it
//   4408 timeout           no frame for the idle timeout, or no successful Hello within the
//                          hello timeout (Error TIMEOUT)
//   4429 too many          connection limits reached (Error RESOURCE_EXHAUSTED)
//   4500 internal          server error (Error UNAVAILABLE or INTERNAL)
// Reconnect now:
//   1012 service restart   server shutting down (another node, or this one soon)
//
// Error codes (Error.code and elsewhere) are the ErrorCode values below.
//
// Blobs (files referenced by `Blob` values in records, see common.proto) travel over plain
// HTTP(S) on the same address as the socket, authenticated with the session token of the
// device's last Welcome: `Authorization: Bearer <session token>` (checked as Hello checks
// it; a missing, forged or expired token is 401). Errors are JSON `{"code", "message"}`
// with `code` one of the ErrorCode names without prefix, lowercase (e.g. "bad_request"), or
// "blob_too_large" (413) or "hash_mismatch" (422) for the two refusals of an upload.
//   HEAD /v1/blobs/{hash}   how many bytes of the blob the server holds for this device:
//                           200 with `Upload-Length` = `Upload-Offset` = size when the blob
//                           is stored (an upload is then a no-op), 200 with only
//                           `Upload-Offset: n` while a partial upload of n bytes waits to be
//                           resumed (0: none yet).
//   PUT  /v1/blobs/{hash}   uploads bytes `first-last` of `total` (header
//                           `Content-Range: bytes first-last/total`; without it the body is
//                           the whole blob). `first` must equal the bytes held (else 409
//                           `conflict` with `Upload-Offset`); a `total` over the server's
//                           `blob.max_bytes` is 413 `blob_too_large`, answered before the
//                           body is read. The last piece makes the server check the SHA-256
//                           of all bytes against `{hash}`: a mismatch is 422
//                           `hash_mismatch` and the partial upload is discarded (start
//                           again from 0). `Content-Type` is stored as the media type.
//                           201 when the blob is complete and stored, 202 with
//                           `Upload-Offset` after an intermediate piece, 200 when the blob
//                           was already stored (nothing is read or written: idempotent). A
//                           piece cut off keeps the bytes that arrived: HEAD, then resume.
//   GET  /v1/blobs/{hash}   downloads the blob (`Range: bytes=first-` resumes: 206), for a
//                           user who uploaded it or may read a record referencing it; name
//                           that record with `?source=&key=&id=` (the partition access
//                           rules of Subscribe apply). Others get 403, unknown blobs 404.
// A device uploads every blob a queued mutation references before sending the mutation; a
// Mutate referencing a blob the server does not hold is answered with MutationResult
// UNAVAILABLE ("upload it, then resend") and is not queued.

// @generated by protoc-gen-es v2.17.0 with parameter "target=ts,import_extension=js"
// @generated from file syncline/v1/device.proto (package syncline.v1, syntax proto3)
/* eslint-disable */

import type { GenEnum, GenFile, GenMessage } from "@bufbuild/protobuf/codegenv2";
import { enumDesc, fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
import type { Record, Value } from "./common_pb.js";
import { file_syncline_v1_common } from "./common_pb.js";
import type { Message } from "@bufbuild/protobuf";

/**
 * Describes the file syncline/v1/device.proto.
 */
export const file_syncline_v1_device: GenFile = /*@__PURE__*/
  fileDesc("ChhzeW5jbGluZS92MS9kZXZpY2UucHJvdG8SC3N5bmNsaW5lLnYxItwDCgtDbGllbnRGcmFtZRIjCgVoZWxsbxgBIAEoCzISLnN5bmNsaW5lLnYxLkhlbGxvSAASKwoJc3Vic2NyaWJlGAIgASgLMhYuc3luY2xpbmUudjEuU3Vic2NyaWJlSAASHwoDYWNrGAMgASgLMhAuc3luY2xpbmUudjEuQWNrSAASIQoEcHVsbBgEIAEoCzIRLnN5bmNsaW5lLnYxLlB1bGxIABIvCgt1bnN1YnNjcmliZRgFIAEoCzIYLnN5bmNsaW5lLnYxLlVuc3Vic2NyaWJlSAASJQoGbXV0YXRlGAYgASgLMhMuc3luY2xpbmUudjEuTXV0YXRlSAASJQoGc2VhcmNoGAcgASgLMhMuc3luY2xpbmUudjEuU2VhcmNoSAASKAoIcnBjX2NhbGwYCCABKAsyFC5zeW5jbGluZS52MS5ScGNDYWxsSAASMAoMYnVsa19yZXF1ZXN0GAkgASgLMhguc3luY2xpbmUudjEuQnVsa1JlcXVlc3RIABIlCgZsb2dvdXQYCiABKAsyEy5zeW5jbGluZS52MS5Mb2dvdXRIABIuCgtjb21tYW5kX2FjaxgLIAEoCzIXLnN5bmNsaW5lLnYxLkNvbW1hbmRBY2tIAEIFCgNtc2ciwwEKBUhlbGxvEhgKEHByb3RvY29sX3ZlcnNpb24YASABKA0SIwoFbG9naW4YAiABKAsyEi5zeW5jbGluZS52MS5Mb2dpbkgAEhcKDXNlc3Npb25fdG9rZW4YAyABKAlIABIXCg1iYWNrZW5kX3Rva2VuGAYgASgJSAASEQoJY2xpZW50X2lkGAQgASgJEicKBmRldmljZRgFIAEoCzIXLnN5bmNsaW5lLnYxLkRldmljZUluZm9CDQoLY3JlZGVudGlhbHMiKwoFTG9naW4SEAoIdXNlcm5hbWUYASABKAkSEAoIcGFzc3dvcmQYAiABKAkiQgoKRGV2aWNlSW5mbxIQCghwbGF0Zm9ybRgBIAEoCRITCgthcHBfdmVyc2lvbhgCIAEoCRINCgVtb2RlbBgDIAEoCSJbCglTdWJzY3JpYmUSDgoGc291cmNlGAEgASgJEgsKA2tleRgCIAEoCRIOCgZjdXJzb3IYAyABKAQSEQoJcGFnZV9zaXplGAQgASgNEg4KBndpbmRvdxgFIAEoDSJACgNBY2sSDgoGc291cmNlGAEgASgJEgsKA2tleRgCIAEoCRIOCgZjdXJzb3IYAyABKAQSDAoEcGFnZRgEIAEoBCIyCgRQdWxsEg4KBnNvdXJjZRgBIAEoCRILCgNrZXkYAiABKAkSDQoFcGFnZXMYAyABKA0iKgoLVW5zdWJzY3JpYmUSDgoGc291cmNlGAEgASgJEgsKA2tleRgCIAEoCSL1AQoGTXV0YXRlEhMKC211dGF0aW9uX2lkGAEgASgJEg4KBnNvdXJjZRgCIAEoCRILCgNrZXkYAyABKAkSIwoCb3AYBCABKA4yFy5zeW5jbGluZS52MS5NdXRhdGlvbk9wEgoKAmlkGAUgASgJEi8KBmZpZWxkcxgGIAMoCzIfLnN5bmNsaW5lLnYxLk11dGF0ZS5GaWVsZHNFbnRyeRIUCgxiYXNlX3ZlcnNpb24YByABKAQaQQoLRmllbGRzRW50cnkSCwoDa2V5GAEgASgJEiEKBXZhbHVlGAIgASgLMhIuc3luY2xpbmUudjEuVmFsdWU6AjgBIr4BCgZTZWFyY2gSEQoJc2VhcmNoX2lkGAEgASgJEg4KBnNvdXJjZRgCIAEoCRIvCgZwYXJhbXMYAyADKAsyHy5zeW5jbGluZS52MS5TZWFyY2guUGFyYW1zRW50cnkSDgoGb2Zmc2V0GAQgASgNEg0KBWxpbWl0GAUgASgNGkEKC1BhcmFtc0VudHJ5EgsKA2tleRgBIAEoCRIhCgV2YWx1ZRgCIAEoCzISLnN5bmNsaW5lLnYxLlZhbHVlOgI4ASJhCgdScGNDYWxsEg8KB2NhbGxfaWQYASABKAkSDwoHc2VydmljZRgCIAEoCRIOCgZtZXRob2QYAyABKAkSDwoHcGF5bG9hZBgEIAEoDBITCgtkZWFkbGluZV9tcxgFIAEoDSJHCgtCdWxrUmVxdWVzdBISCgpyZXF1ZXN0X2lkGAEgASgJEg8KB3NvdXJjZXMYAiADKAkSEwoLbWluX3JlY29yZHMYAyABKAQiCAoGTG9nb3V0IiAKCkNvbW1hbmRBY2sSEgoKY29tbWFuZF9pZBgBIAEoCSLaAwoLU2VydmVyRnJhbWUSJwoHd2VsY29tZRgBIAEoCzIULnN5bmNsaW5lLnYxLldlbGNvbWVIABInCgdjaGFuZ2VzGAIgASgLMhQuc3luY2xpbmUudjEuQ2hhbmdlc0gAEiwKCnN5bmNfc3RhdGUYAyABKAsyFi5zeW5jbGluZS52MS5TeW5jU3RhdGVIABIwCgxtdXRhdGlvbl9hY2sYBCABKAsyGC5zeW5jbGluZS52MS5NdXRhdGlvbkFja0gAEjYKD211dGF0aW9uX3Jlc3VsdBgFIAEoCzIbLnN5bmNsaW5lLnYxLk11dGF0aW9uUmVzdWx0SAASMgoNc2VhcmNoX3Jlc3VsdBgGIAEoCzIZLnN5bmNsaW5lLnYxLlNlYXJjaFJlc3VsdEgAEioKCXJwY19yZXBseRgHIAEoCzIVLnN5bmNsaW5lLnYxLlJwY1JlcGx5SAASLAoKYnVsa19yZWFkeRgIIAEoCzIWLnN5bmNsaW5lLnYxLkJ1bGtSZWFkeUgAEicKB2NvbW1hbmQYCSABKAsyFC5zeW5jbGluZS52MS5Db21tYW5kSAASIwoFZXJyb3IYCiABKAsyEi5zeW5jbGluZS52MS5FcnJvckgAQgUKA21zZyKWAgoHV2VsY29tZRIRCgljbGllbnRfaWQYASABKAkSFQoNc2Vzc2lvbl90b2tlbhgCIAEoCRIPCgd1c2VyX2lkGAMgASgJEhsKE3Rva2VuX2V4cGlyZXNfYXRfbXMYBCABKAMSFAoMaGVhcnRiZWF0X21zGAUgASgNEhcKD2lkbGVfdGltZW91dF9tcxgGIAEoDRIXCg9tYXhfZnJhbWVfYnl0ZXMYByABKA0SFQoNbWF4X3BhZ2Vfc2l6ZRgIIAEoDRISCgptYXhfd2luZG93GAkgASgNEigKB3NvdXJjZXMYCiADKAsyFy5zeW5jbGluZS52MS5Tb3VyY2VJbmZvEhYKDm1heF9wYWdlX2J5dGVzGAsgASgNIj4KClNvdXJjZUluZm8SDAoEbmFtZRgBIAEoCRIUCgxwYXJ0aXRpb25pbmcYAiABKAkSDAoEa2V5cxgDIAMoCSKTAgoHQ2hhbmdlcxIOCgZzb3VyY2UYASABKAkSCwoDa2V5GAIgASgJEgwKBGZyb20YAyABKAQSCgoCdG8YBCABKAQSJAoHdXBzZXJ0cxgFIAMoCzITLnN5bmNsaW5lLnYxLlJlY29yZBIPCgdkZWxldGVzGAYgAygJEg0KBXRvdGFsGAcgASgEEhEKCXJlbWFpbmluZxgIIAEoBBIgCgVsaW5rcxgJIAMoCzIRLnN5bmNsaW5lLnYxLkxpbmsSDAoEcGFnZRgKIAEoBBIQCghzbmFwc2hvdBgLIAEoCBINCgVyZXNldBgMIAEoCBIVCg1zbmFwc2hvdF9kb25lGA0gASgIEhAKCGNoZWNrc3VtGA4gASgEIiMKBExpbmsSDwoHdGVtcF9pZBgBIAEoCRIKCgJpZBgCIAEoCSKlAQoJU3luY1N0YXRlEg4KBnNvdXJjZRgBIAEoCRILCgNrZXkYAiABKAkSJwoGc3RhdHVzGAMgASgOMhcuc3luY2xpbmUudjEuU3luY1N0YXR1cxIOCgZjdXJzb3IYBCABKAQSDQoFdG90YWwYBSABKAQSEAoIY2hlY2tzdW0YBiABKAQSIQoFZXJyb3IYByABKAsyEi5zeW5jbGluZS52MS5FcnJvciIyCgtNdXRhdGlvbkFjaxITCgttdXRhdGlvbl9pZBgBIAEoCRIOCgZxdWV1ZWQYAiABKAQiogEKDk11dGF0aW9uUmVzdWx0EhMKC211dGF0aW9uX2lkGAEgASgJEgoKAm9rGAIgASgIEiMKBnJlY29yZBgDIAEoCzITLnN5bmNsaW5lLnYxLlJlY29yZBIfCgRsaW5rGAQgASgLMhEuc3luY2xpbmUudjEuTGluaxIpCgVlcnJvchgFIAEoCzIaLnN5bmNsaW5lLnYxLk11dGF0aW9uRXJyb3IikQEKDU11dGF0aW9uRXJyb3ISIwoCb3AYASABKA4yFy5zeW5jbGluZS52MS5NdXRhdGlvbk9wEiQKBGNvZGUYAiABKA4yFi5zeW5jbGluZS52MS5FcnJvckNvZGUSDwoHbWVzc2FnZRgDIAEoCRIkCgdjdXJyZW50GAQgASgLMhMuc3luY2xpbmUudjEuUmVjb3JkIowBCgxTZWFyY2hSZXN1bHQSEQoJc2VhcmNoX2lkGAEgASgJEiQKB3JlY29yZHMYAiADKAsyEy5zeW5jbGluZS52MS5SZWNvcmQSDQoFdG90YWwYAyABKAQSIQoFZXJyb3IYBCABKAsyEi5zeW5jbGluZS52MS5FcnJvchIRCgltZXJnZV9rZXkYBSABKAkiXQoIUnBjUmVwbHkSDwoHY2FsbF9pZBgBIAEoCRIRCgdwYXlsb2FkGAIgASgMSAASIwoFZXJyb3IYAyABKAsyEi5zeW5jbGluZS52MS5FcnJvckgAQggKBnJlc3VsdCKAAgoJQnVsa1JlYWR5EhIKCnJlcXVlc3RfaWQYASABKAkSCwoDdXJsGAIgASgJEg0KBXRva2VuGAMgASgJEjQKB2N1cnNvcnMYBCADKAsyIy5zeW5jbGluZS52MS5CdWxrUmVhZHkuQ3Vyc29yc0VudHJ5EiQKBWZpbGVzGAUgAygLMhUuc3luY2xpbmUudjEuQnVsa0ZpbGUSFAoMcGFnZV9pbnN0ZWFkGAYgAygJEiEKBWVycm9yGAcgASgLMhIuc3luY2xpbmUudjEuRXJyb3IaLgoMQ3Vyc29yc0VudHJ5EgsKA2tleRgBIAEoCRINCgV2YWx1ZRgCIAEoBDoCOAEiqQEKCEJ1bGtGaWxlEg4KBnNvdXJjZRgBIAEoCRILCgNrZXkYAiABKAkSCwoDdXJsGAMgASgJEg0KBXRva2VuGAQgASgJEhsKE3Rva2VuX2V4cGlyZXNfYXRfbXMYBSABKAMSEAoIc2VxdWVuY2UYBiABKAQSFAoMcmVjb3JkX2NvdW50GAcgASgEEhAKCGNoZWNrc3VtGAggASgEEg0KBWJ5dGVzGAkgASgEIlUKB0NvbW1hbmQSJgoEa2luZBgBIAEoDjIYLnN5bmNsaW5lLnYxLkNvbW1hbmRLaW5kEg4KBnJlYXNvbhgCIAEoCRISCgpjb21tYW5kX2lkGAMgASgJImoKBUVycm9yEiQKBGNvZGUYASABKA4yFi5zeW5jbGluZS52MS5FcnJvckNvZGUSDwoHbWVzc2FnZRgCIAEoCRINCgVmYXRhbBgDIAEoCBIOCgZzb3VyY2UYBCABKAkSCwoDa2V5GAUgASgJKnEKCk11dGF0aW9uT3ASGwoXTVVUQVRJT05fT1BfVU5TUEVDSUZJRUQQABIWChJNVVRBVElPTl9PUF9DUkVBVEUQARIWChJNVVRBVElPTl9PUF9VUERBVEUQAhIWChJNVVRBVElPTl9PUF9ERUxFVEUQAyqvAQoKU3luY1N0YXR1cxIbChdTWU5DX1NUQVRVU19VTlNQRUNJRklFRBAAEhsKF1NZTkNfU1RBVFVTX0lOX1BST0dSRVNTEAESGQoVU1lOQ19TVEFUVVNfQ0FVR0hUX1VQEAISFQoRU1lOQ19TVEFUVVNfRVJST1IQAxIVChFTWU5DX1NUQVRVU19SRVNFVBAEEh4KGlNZTkNfU1RBVFVTX1NDSEVNQV9DSEFOR0VEEAUqiwEKC0NvbW1hbmRLaW5kEhwKGENPTU1BTkRfS0lORF9VTlNQRUNJRklFRBAAEhUKEUNPTU1BTkRfS0lORF9MT0NLEAESFQoRQ09NTUFORF9LSU5EX1dJUEUQAhIXChNDT01NQU5EX0tJTkRfUkVTWU5DEAMSFwoTQ09NTUFORF9LSU5EX0xPR09VVBAEKoEDCglFcnJvckNvZGUSGgoWRVJST1JfQ09ERV9VTlNQRUNJRklFRBAAEhoKFkVSUk9SX0NPREVfQkFEX1JFUVVFU1QQARIeChpFUlJPUl9DT0RFX1VOQVVUSEVOVElDQVRFRBACEhgKFEVSUk9SX0NPREVfRk9SQklEREVOEAMSHQoZRVJST1JfQ09ERV9VTktOT1dOX1NPVVJDRRAEEiIKHkVSUk9SX0NPREVfVU5TVVBQT1JURURfVkVSU0lPThAFEiEKHUVSUk9SX0NPREVfUkVTT1VSQ0VfRVhIQVVTVEVEEAYSFwoTRVJST1JfQ09ERV9DT05GTElDVBAHEhgKFEVSUk9SX0NPREVfTk9UX0ZPVU5EEAgSGgoWRVJST1JfQ09ERV9VTkFWQUlMQUJMRRAJEhYKEkVSUk9SX0NPREVfVElNRU9VVBAKEhcKE0VSUk9SX0NPREVfSU5URVJOQUwQCxIcChhFUlJPUl9DT0RFX1VOSU1QTEVNRU5URUQQDGIGcHJvdG8z", [file_syncline_v1_common]);

/**
 * One device-to-server message.
 *
 * @generated from message syncline.v1.ClientFrame
 */
export type ClientFrame = Message<"syncline.v1.ClientFrame"> & {
  /**
   * @generated from oneof syncline.v1.ClientFrame.msg
   */
  msg: {
    /**
     * @generated from field: syncline.v1.Hello hello = 1;
     */
    value: Hello;
    case: "hello";
  } | {
    /**
     * @generated from field: syncline.v1.Subscribe subscribe = 2;
     */
    value: Subscribe;
    case: "subscribe";
  } | {
    /**
     * @generated from field: syncline.v1.Ack ack = 3;
     */
    value: Ack;
    case: "ack";
  } | {
    /**
     * @generated from field: syncline.v1.Pull pull = 4;
     */
    value: Pull;
    case: "pull";
  } | {
    /**
     * @generated from field: syncline.v1.Unsubscribe unsubscribe = 5;
     */
    value: Unsubscribe;
    case: "unsubscribe";
  } | {
    /**
     * @generated from field: syncline.v1.Mutate mutate = 6;
     */
    value: Mutate;
    case: "mutate";
  } | {
    /**
     * @generated from field: syncline.v1.Search search = 7;
     */
    value: Search;
    case: "search";
  } | {
    /**
     * @generated from field: syncline.v1.RpcCall rpc_call = 8;
     */
    value: RpcCall;
    case: "rpcCall";
  } | {
    /**
     * @generated from field: syncline.v1.BulkRequest bulk_request = 9;
     */
    value: BulkRequest;
    case: "bulkRequest";
  } | {
    /**
     * @generated from field: syncline.v1.Logout logout = 10;
     */
    value: Logout;
    case: "logout";
  } | {
    /**
     * @generated from field: syncline.v1.CommandAck command_ack = 11;
     */
    value: CommandAck;
    case: "commandAck";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message syncline.v1.ClientFrame.
 * Use `create(ClientFrameSchema)` to create a new message.
 */
export const ClientFrameSchema: GenMessage<ClientFrame> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 0);

/**
 * Opens a session. Must be the first frame; a second Hello is refused (BAD_REQUEST).
 *
 * @generated from message syncline.v1.Hello
 */
export type Hello = Message<"syncline.v1.Hello"> & {
  /**
   * Protocol version the device speaks. The server accepts 1; anything else (0 included)
   * gets Error UNSUPPORTED_VERSION (fatal) and close 4426: do not reconnect until updated.
   *
   * @generated from field: uint32 protocol_version = 1;
   */
  protocolVersion: number;

  /**
   * @generated from oneof syncline.v1.Hello.credentials
   */
  credentials: {
    /**
     * Username and password, checked against the app's users (argon2 hashes) or by the
     * login channel's Authenticate. A wrong password and an unknown user name get the same
     * Error UNAUTHENTICATED (fatal, "wrong username or password") and close 4001, after the
     * same work (an unknown name is checked against a decoy hash).
     *
     * Password checks are bounded: at most auth.login_concurrency run at once (default one
     * per core, at most 8) and auth.login_queue more wait (default 64), each at most
     * auth.login_queue_timeout_ms (default 2000); a login beyond that gets Error
     * RESOURCE_EXHAUSTED (fatal, "too many logins are being checked right now; retry in a
     * few seconds") and close 4429: retry with backoff.
     *
     * Failed logins are limited. After auth.max_failed_logins_per_user (default 10) wrong
     * passwords for one user name, from any address, or auth.max_failed_logins_per_address
     * (default 100) from one address (an IPv6 /64 counts as one), within
     * auth.failed_login_window_secs (default 300), logins for that name, or from that
     * address, are refused without a check for auth.failed_login_backoff_secs (default 60),
     * doubled for each block of the same name or address in a row (up to 32 times): Error
     * RESOURCE_EXHAUSTED (fatal) with the message "too many failed logins for this user;
     * retry in N s" (or "from this address"), and close 4429; the device should not retry
     * before N seconds. While blocked, even the right password is refused (checking it would
     * let guessing go on); other user names, and for an address block other addresses, are
     * served as usual. Refused attempts are not counted; a successful login clears its user
     * name's count (not its address's). Checks still running count against the limits too:
     * while the failures so far plus the checks running for a name (or from an address)
     * could reach its limit, another login for it gets Error RESOURCE_EXHAUSTED "too many
     * logins for this user are being checked; retry in 1 s" (or "from this address") and
     * close 4429, so concurrent guesses get no more checks than sequential ones. Session
     * tokens and backend tokens are not limited this way.
     *
     * @generated from field: syncline.v1.Login login = 2;
     */
    value: Login;
    case: "login";
  } | {
    /**
     * A session token from an earlier Welcome. Expired or forged tokens get Error
     * UNAUTHENTICATED (fatal) and close 4001; the device should then log in again.
     *
     * @generated from field: string session_token = 3;
     */
    value: string;
    case: "sessionToken";
  } | {
    /**
     * A login token issued by the app's own backend, for apps whose backend has already
     * authenticated the user (no Syncline password needed). It is a JWT (RFC 7519) signed
     * with HS256 using the secret shared with this server (`auth.backend_token_secret`).
     * The server checks: the signature; `exp` (required) is not past; `nbf` and `iat`, when
     * present, are not in the future (each time with 30 s of leeway for clock skew); `sub`
     * (required) is a valid user name, 1 to 128 bytes without control characters, and
     * becomes the user id; `aud`, when the server has `auth.backend_token_audience`, is
     * present and names it. Optional claim `entitlements` is an object of source name to an
     * array of partition keys the user may sync in `custom` sources (as a channel's
     * Authenticate grants them; empty and "*" keys are dropped, at most 256 are kept).
     * Unknown claims are ignored. A valid token registers (or refreshes) the device like a
     * password login, and Welcome carries a session token for later reconnects. A refused
     * token, or any backend token when the server has no secret configured, gets Error
     * UNAUTHENTICATED (fatal, its message says why) and close 4001.
     *
     * @generated from field: string backend_token = 6;
     */
    value: string;
    case: "backendToken";
  } | { case: undefined; value?: undefined };

  /**
   * The device's client id from an earlier Welcome, if it has one. Ignored when a session
   * token is given (the token names the client). When empty or unknown to the server, the
   * server registers a new client id.
   *
   * @generated from field: string client_id = 4;
   */
  clientId: string;

  /**
   * Describes the install; stored in the device registry.
   *
   * @generated from field: syncline.v1.DeviceInfo device = 5;
   */
  device?: DeviceInfo | undefined;
};

/**
 * Describes the message syncline.v1.Hello.
 * Use `create(HelloSchema)` to create a new message.
 */
export const HelloSchema: GenMessage<Hello> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 1);

/**
 * Username and password.
 *
 * @generated from message syncline.v1.Login
 */
export type Login = Message<"syncline.v1.Login"> & {
  /**
   * @generated from field: string username = 1;
   */
  username: string;

  /**
   * @generated from field: string password = 2;
   */
  password: string;
};

/**
 * Describes the message syncline.v1.Login.
 * Use `create(LoginSchema)` to create a new message.
 */
export const LoginSchema: GenMessage<Login> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 2);

/**
 * What the device says about itself. Informational: stored, shown to operators.
 *
 * @generated from message syncline.v1.DeviceInfo
 */
export type DeviceInfo = Message<"syncline.v1.DeviceInfo"> & {
  /**
   * e.g. "ios", "android", "web".
   *
   * @generated from field: string platform = 1;
   */
  platform: string;

  /**
   * The app's version string.
   *
   * @generated from field: string app_version = 2;
   */
  appVersion: string;

  /**
   * Free-form model / OS description.
   *
   * @generated from field: string model = 3;
   */
  model: string;
};

/**
 * Describes the message syncline.v1.DeviceInfo.
 * Use `create(DeviceInfoSchema)` to create a new message.
 */
export const DeviceInfoSchema: GenMessage<DeviceInfo> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 3);

/**
 * Starts (or restarts) syncing one partition. A device may subscribe to many partitions on
 * one connection; subscribing again to the same partition restarts it from the given cursor.
 *
 * @generated from message syncline.v1.Subscribe
 */
export type Subscribe = Message<"syncline.v1.Subscribe"> & {
  /**
   * Source name. Unknown sources get Error UNKNOWN_SOURCE.
   *
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * Partition key. Empty means the natural key: the user's id for `user` sources and "*"
   * for `app` sources. A `user` partition of another user gets Error FORBIDDEN.
   *
   * @generated from field: string key = 2;
   */
  key: string;

  /**
   * The sequence the device has durably applied for this partition (0: nothing). When it
   * is 0, below the partition's compaction horizon, or above its head (the server's data
   * was reset), the server sends a snapshot (Changes with snapshot = true, the first with
   * reset = true) and then the log after the snapshot's sequence; otherwise the log after
   * the cursor.
   *
   * @generated from field: uint64 cursor = 3;
   */
  cursor: bigint;

  /**
   * Records (snapshot) or changes (log) per page; 0 means the server default. Capped by
   * Welcome.max_page_size. Pages are bounded in encoded bytes too (Welcome.max_page_bytes):
   * a page of large records holds fewer.
   *
   * @generated from field: uint32 page_size = 4;
   */
  pageSize: number;

  /**
   * Catch-up pages the server may send before the device acks; 0 means pull mode (the
   * device asks for each page with Pull). Capped by Welcome.max_window. In pull mode the
   * server sends nothing after Subscribe until the device's first Pull (but the SyncState
   * reset of a cursor it cannot continue from): not the first page, not even the caught_up
   * SyncState of a device already at the head. A device that subscribes with window 0 must
   * Pull to start.
   *
   * @generated from field: uint32 window = 5;
   */
  window: number;
};

/**
 * Describes the message syncline.v1.Subscribe.
 * Use `create(SubscribeSchema)` to create a new message.
 */
export const SubscribeSchema: GenMessage<Subscribe> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 4);

/**
 * Acknowledges pages of a partition: the device has durably applied everything up to
 * `page` and holds the partition at `cursor`. Frees window credit for more pages and
 * records the cursor in the device registry (advisory: the device's own cursor is the truth,
 * and the server pages by `page`, never by this cursor).
 *
 * Mid-snapshot (snapshot pages before the one with snapshot_done) the device holds no usable
 * cursor yet: it acks the page with cursor 0. A half-received snapshot cannot be resumed: a
 * device whose connection drops before snapshot_done drops what it received and subscribes
 * again with cursor 0, and the server starts a new snapshot (at the then current sequence).
 * After the snapshot_done page the device acks cursor = that page's `to`.
 *
 * @generated from message syncline.v1.Ack
 */
export type Ack = Message<"syncline.v1.Ack"> & {
  /**
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * @generated from field: string key = 2;
   */
  key: string;

  /**
   * The device's cursor after applying the acked pages (0 while a snapshot is incomplete).
   *
   * @generated from field: uint64 cursor = 3;
   */
  cursor: bigint;

  /**
   * The highest Changes.page applied (0 for live changes, which need no credit).
   *
   * @generated from field: uint64 page = 4;
   */
  page: bigint;
};

/**
 * Describes the message syncline.v1.Ack.
 * Use `create(AckSchema)` to create a new message.
 */
export const AckSchema: GenMessage<Ack> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 5);

/**
 * Asks for up to `pages` more catch-up pages of a subscription in pull mode (window 0).
 * The device pulls while Changes.remaining is above 0. The server sends one step unasked
 * where the device cannot know to ask: after a page with remaining = 0 (SyncState
 * caught_up, or a page of what committed meanwhile) and after switching a live subscription
 * back to catch-up (its first page).
 *
 * @generated from message syncline.v1.Pull
 */
export type Pull = Message<"syncline.v1.Pull"> & {
  /**
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * @generated from field: string key = 2;
   */
  key: string;

  /**
   * @generated from field: uint32 pages = 3;
   */
  pages: number;
};

/**
 * Describes the message syncline.v1.Pull.
 * Use `create(PullSchema)` to create a new message.
 */
export const PullSchema: GenMessage<Pull> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 6);

/**
 * Stops a subscription. Pages and live changes of the partition stop.
 *
 * @generated from message syncline.v1.Unsubscribe
 */
export type Unsubscribe = Message<"syncline.v1.Unsubscribe"> & {
  /**
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * @generated from field: string key = 2;
   */
  key: string;
};

/**
 * Describes the message syncline.v1.Unsubscribe.
 * Use `create(UnsubscribeSchema)` to create a new message.
 */
export const UnsubscribeSchema: GenMessage<Unsubscribe> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 7);

/**
 * A device-side create, update or delete. Queued durably per device before MutationAck;
 * delivered to the source's channel in order, at most once per mutation_id.
 *
 * @generated from message syncline.v1.Mutate
 */
export type Mutate = Message<"syncline.v1.Mutate"> & {
  /**
   * Chosen by the device, unique per device, 1 to 128 bytes; the same id sent again (after a
   * reconnect) is answered from the first outcome and never reaches the backend twice, as
   * long as the server keeps that outcome: the server's `store.mutation_outcome_retention_hours`
   * (default 720, 30 days, as long as a session token lives). Sent again after that, it
   * is queued and dispatched anew (channels that deduplicate by mutation_id still catch it).
   *
   * @generated from field: string mutation_id = 1;
   */
  mutationId: string;

  /**
   * @generated from field: string source = 2;
   */
  source: string;

  /**
   * Partition key, as in Subscribe.
   *
   * @generated from field: string key = 3;
   */
  key: string;

  /**
   * @generated from field: syncline.v1.MutationOp op = 4;
   */
  op: MutationOp;

  /**
   * The record id. For creates, a temporary id chosen by the device; MutationResult links
   * it to the backend's id.
   *
   * @generated from field: string id = 5;
   */
  id: string;

  /**
   * For creates and updates: the fields to set (an update changes only these fields). The id
   * and these fields must be within the limits of Record (common.proto: names, values, count,
   * size); otherwise the mutation is refused at once with MutationResult BAD_REQUEST, naming
   * the record and field, and never reaches the backend.
   *
   * @generated from field: map<string, syncline.v1.Value> fields = 6;
   */
  fields: { [key: string]: Value };

  /**
   * The record version the device based the change on (0 for creates); used by the
   * source's conflict policy.
   *
   * @generated from field: uint64 base_version = 7;
   */
  baseVersion: bigint;
};

/**
 * Describes the message syncline.v1.Mutate.
 * Use `create(MutateSchema)` to create a new message.
 */
export const MutateSchema: GenMessage<Mutate> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 8);

/**
 * Asks the source's channel to search. Results come back as SearchResult.
 *
 * @generated from message syncline.v1.Search
 */
export type Search = Message<"syncline.v1.Search"> & {
  /**
   * Chosen by the device; echoed in SearchResult.
   *
   * @generated from field: string search_id = 1;
   */
  searchId: string;

  /**
   * @generated from field: string source = 2;
   */
  source: string;

  /**
   * Search parameters, passed to the channel as given.
   *
   * @generated from field: map<string, syncline.v1.Value> params = 3;
   */
  params: { [key: string]: Value };

  /**
   * @generated from field: uint32 offset = 4;
   */
  offset: number;

  /**
   * @generated from field: uint32 limit = 5;
   */
  limit: number;
};

/**
 * Describes the message syncline.v1.Search.
 * Use `create(SearchSchema)` to create a new message.
 */
export const SearchSchema: GenMessage<Search> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 9);

/**
 * Calls a backend business operation ("mobile RPC", see rpc.proto). Answered by RpcReply
 * with the same call_id; calls run beside sync traffic and never block it. A call still
 * running when the connection closes is cancelled toward the backend and gets no reply.
 * Refused at once (RpcReply with an error): an empty or over-long call_id or method, or a
 * call_id already in flight on this connection (BAD_REQUEST); a payload above the server's
 * rpc.max_payload_bytes (BAD_REQUEST); a service that is not configured (NOT_FOUND); a
 * device with rpc.max_in_flight_per_device calls running, or a service at its
 * max_in_flight (RESOURCE_EXHAUSTED).
 *
 * @generated from message syncline.v1.RpcCall
 */
export type RpcCall = Message<"syncline.v1.RpcCall"> & {
  /**
   * Chosen by the device (1 to 128 bytes), unique among its calls in flight; echoed in
   * RpcReply.
   *
   * @generated from field: string call_id = 1;
   */
  callId: string;

  /**
   * Service name, routed to a backend by config.
   *
   * @generated from field: string service = 2;
   */
  service: string;

  /**
   * Operation within the service (1 to 128 bytes).
   *
   * @generated from field: string method = 3;
   */
  method: string;

  /**
   * Opaque request payload, passed to the backend as given.
   *
   * @generated from field: bytes payload = 4;
   */
  payload: Uint8Array;

  /**
   * Deadline in milliseconds; 0 means the configured default. Capped by config. When it
   * passes the call is cancelled toward the backend and answered with TIMEOUT.
   *
   * @generated from field: uint32 deadline_ms = 5;
   */
  deadlineMs: number;
};

/**
 * Describes the message syncline.v1.RpcCall.
 * Use `create(RpcCallSchema)` to create a new message.
 */
export const RpcCallSchema: GenMessage<RpcCall> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 10);

/**
 * Asks for a bulk snapshot of sources: per partition, one SQLite file to download over
 * HTTP(S) instead of catch-up pages (docs/BULK.md has the file's schema). For a first sync
 * (cursor 0) or a cursor below the partition's compaction horizon (SyncState RESET) of a
 * large partition: the file holds the partition at one sequence, and the device subscribes
 * from that sequence afterwards, so changes made while it downloads reach it through the log.
 *
 * The server answers with one BulkReady carrying the same request_id, once every file is
 * written (a file written at most bulk.reuse_changes changes ago is reused, so asking again
 * is cheap). The request is durable: it survives a server restart, and a device that lost
 * its connection before BulkReady arrived asks again (same or new request_id) and is
 * answered from the files already written.
 *
 * @generated from message syncline.v1.BulkRequest
 */
export type BulkRequest = Message<"syncline.v1.BulkRequest"> & {
  /**
   * Chosen by the device; echoed in BulkReady. Non-empty, at most 128 bytes.
   *
   * @generated from field: string request_id = 1;
   */
  requestId: string;

  /**
   * Source names (1 to 64, no repeats). Each names the source's natural partition for this
   * user: the user's own for `user` sources, "*" for `app` sources, the only entitled key for
   * `custom` sources (a custom source with several keys is refused with FORBIDDEN).
   *
   * @generated from field: repeated string sources = 2;
   */
  sources: string[];

  /**
   * How the device learns whether bulk is worth it: a partition with fewer live records than
   * this gets no file and is listed in BulkReady.page_instead (subscribe with cursor 0 and
   * page through it as usual). 0: a file for every partition, however small.
   *
   * @generated from field: uint64 min_records = 3;
   */
  minRecords: bigint;
};

/**
 * Describes the message syncline.v1.BulkRequest.
 * Use `create(BulkRequestSchema)` to create a new message.
 */
export const BulkRequestSchema: GenMessage<BulkRequest> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 11);

/**
 * Ends the session: the server revokes the session token, answers nothing and closes with
 * code 1000.
 *
 * @generated from message syncline.v1.Logout
 */
export type Logout = Message<"syncline.v1.Logout"> & {
};

/**
 * Describes the message syncline.v1.Logout.
 * Use `create(LogoutSchema)` to create a new message.
 */
export const LogoutSchema: GenMessage<Logout> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 12);

/**
 * Tells the server the device has acted on a Command (see Command for when to send it). The
 * server records the command as acknowledged (shown to operators) and answers nothing. An id
 * the server does not know for this device, or one already acknowledged, is ignored, so
 * sending an ack again is always safe.
 *
 * @generated from message syncline.v1.CommandAck
 */
export type CommandAck = Message<"syncline.v1.CommandAck"> & {
  /**
   * Command.command_id of the command acted on.
   *
   * @generated from field: string command_id = 1;
   */
  commandId: string;
};

/**
 * Describes the message syncline.v1.CommandAck.
 * Use `create(CommandAckSchema)` to create a new message.
 */
export const CommandAckSchema: GenMessage<CommandAck> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 13);

/**
 * One server-to-device message.
 *
 * @generated from message syncline.v1.ServerFrame
 */
export type ServerFrame = Message<"syncline.v1.ServerFrame"> & {
  /**
   * @generated from oneof syncline.v1.ServerFrame.msg
   */
  msg: {
    /**
     * @generated from field: syncline.v1.Welcome welcome = 1;
     */
    value: Welcome;
    case: "welcome";
  } | {
    /**
     * @generated from field: syncline.v1.Changes changes = 2;
     */
    value: Changes;
    case: "changes";
  } | {
    /**
     * @generated from field: syncline.v1.SyncState sync_state = 3;
     */
    value: SyncState;
    case: "syncState";
  } | {
    /**
     * @generated from field: syncline.v1.MutationAck mutation_ack = 4;
     */
    value: MutationAck;
    case: "mutationAck";
  } | {
    /**
     * @generated from field: syncline.v1.MutationResult mutation_result = 5;
     */
    value: MutationResult;
    case: "mutationResult";
  } | {
    /**
     * @generated from field: syncline.v1.SearchResult search_result = 6;
     */
    value: SearchResult;
    case: "searchResult";
  } | {
    /**
     * @generated from field: syncline.v1.RpcReply rpc_reply = 7;
     */
    value: RpcReply;
    case: "rpcReply";
  } | {
    /**
     * @generated from field: syncline.v1.BulkReady bulk_ready = 8;
     */
    value: BulkReady;
    case: "bulkReady";
  } | {
    /**
     * @generated from field: syncline.v1.Command command = 9;
     */
    value: Command;
    case: "command";
  } | {
    /**
     * @generated from field: syncline.v1.Error error = 10;
     */
    value: Error;
    case: "error";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message syncline.v1.ServerFrame.
 * Use `create(ServerFrameSchema)` to create a new message.
 */
export const ServerFrameSchema: GenMessage<ServerFrame> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 14);

/**
 * Answers a successful Hello.
 *
 * @generated from message syncline.v1.Welcome
 */
export type Welcome = Message<"syncline.v1.Welcome"> & {
  /**
   * The device's client id: the one given in Hello if known, else a new one. Store it.
   *
   * @generated from field: string client_id = 1;
   */
  clientId: string;

  /**
   * A session token for later Hellos (instead of the password). Valid until
   * token_expires_at_ms.
   *
   * @generated from field: string session_token = 2;
   */
  sessionToken: string;

  /**
   * The user id the session acts as (the partition key of `user` sources).
   *
   * @generated from field: string user_id = 3;
   */
  userId: string;

  /**
   * Unix time in milliseconds when session_token expires.
   *
   * @generated from field: int64 token_expires_at_ms = 4;
   */
  tokenExpiresAtMs: bigint;

  /**
   * The server pings every heartbeat_ms; a device that sends nothing (not even a pong) for
   * idle_timeout_ms is disconnected with close code 4408.
   *
   * @generated from field: uint32 heartbeat_ms = 5;
   */
  heartbeatMs: number;

  /**
   * @generated from field: uint32 idle_timeout_ms = 6;
   */
  idleTimeoutMs: number;

  /**
   * Limits of this server: larger frames close the connection (1009); page_size and window
   * in Subscribe are capped to these.
   *
   * @generated from field: uint32 max_frame_bytes = 7;
   */
  maxFrameBytes: number;

  /**
   * @generated from field: uint32 max_page_size = 8;
   */
  maxPageSize: number;

  /**
   * @generated from field: uint32 max_window = 9;
   */
  maxWindow: number;

  /**
   * The sources this user may sync, with their partitioning.
   *
   * @generated from field: repeated syncline.v1.SourceInfo sources = 10;
   */
  sources: SourceInfo[];

  /**
   * Most encoded bytes of one Changes frame (catch-up page or live push): a page ends
   * before the record or change that would take it past this, so pages of large records
   * hold fewer than page_size. A single record or change larger than this still comes, alone
   * in its frame. 0 from servers that do not bound pages in bytes.
   *
   * @generated from field: uint32 max_page_bytes = 11;
   */
  maxPageBytes: number;
};

/**
 * Describes the message syncline.v1.Welcome.
 * Use `create(WelcomeSchema)` to create a new message.
 */
export const WelcomeSchema: GenMessage<Welcome> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 15);

/**
 * A source as a device sees it.
 *
 * @generated from message syncline.v1.SourceInfo
 */
export type SourceInfo = Message<"syncline.v1.SourceInfo"> & {
  /**
   * @generated from field: string name = 1;
   */
  name: string;

  /**
   * "user", "app" or "custom".
   *
   * @generated from field: string partitioning = 2;
   */
  partitioning: string;

  /**
   * The partition key to subscribe to (user id, "*", or a custom key).
   *
   * @generated from field: repeated string keys = 3;
   */
  keys: string[];
};

/**
 * Describes the message syncline.v1.SourceInfo.
 * Use `create(SourceInfoSchema)` to create a new message.
 */
export const SourceInfoSchema: GenMessage<SourceInfo> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 16);

/**
 * A page of a partition: either a snapshot page (records at a fixed sequence) or a run of
 * log changes, or a live push of committed changes. Every Changes frame is bounded in
 * encoded bytes by Welcome.max_page_bytes, except one holding a single record or change
 * larger than that on its own; catch-up pages also by the subscription's page_size.
 *
 * @generated from message syncline.v1.Changes
 */
export type Changes = Message<"syncline.v1.Changes"> & {
  /**
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * @generated from field: string key = 2;
   */
  key: string;

  /**
   * Log pages and live pushes: the changes cover sequences from..=to, gap-free: a device
   * whose cursor is from-1 applies them and sets its cursor to `to`. Snapshot pages:
   * from = 0 and to = the snapshot sequence S.
   *
   * @generated from field: uint64 from = 3;
   */
  from: bigint;

  /**
   * @generated from field: uint64 to = 4;
   */
  to: bigint;

  /**
   * Records created or replaced (whole records, with version). Apply deletes first, then
   * upserts.
   *
   * @generated from field: repeated syncline.v1.Record upserts = 5;
   */
  upserts: Record[];

  /**
   * Ids of deleted records.
   *
   * @generated from field: repeated string deletes = 6;
   */
  deletes: string[];

  /**
   * Live records in the partition at `to` when `checksum` is set; otherwise (snapshot
   * pages, log pages that end before the head, live pushes split inside a commit) a
   * progress figure: the count at the head when the frame was made.
   *
   * @generated from field: uint64 total = 7;
   */
  total: bigint;

  /**
   * Catch-up: pages the server knows are still to come (an estimate for progress bars; at
   * least 1 on every page but the last the server knows of; 0 on that page and on live
   * pushes).
   *
   * @generated from field: uint64 remaining = 8;
   */
  remaining: bigint;

  /**
   * Temporary id to real id links for the device's own creates.
   *
   * @generated from field: repeated syncline.v1.Link links = 9;
   */
  links: Link[];

  /**
   * Catch-up page number within this subscription (1, 2, ...); ack it. 0 for live pushes,
   * which need no ack for flow control (ack them to record the cursor).
   *
   * @generated from field: uint64 page = 10;
   */
  page: bigint;

  /**
   * True for snapshot pages.
   *
   * @generated from field: bool snapshot = 11;
   */
  snapshot: boolean;

  /**
   * True on the first snapshot page: the device must drop everything it holds of the
   * partition before applying it.
   *
   * @generated from field: bool reset = 12;
   */
  reset: boolean;

  /**
   * True on the last snapshot page: after applying it the device's cursor is `to`.
   *
   * @generated from field: bool snapshot_done = 13;
   */
  snapshotDone: boolean;

  /**
   * Order-independent checksum of the live set at `to` (log pages and live pushes; 0 on
   * snapshot pages, on log pages that end before the head, and on a live push that ends
   * inside a commit too large for one frame). See SyncState.checksum.
   *
   * @generated from field: uint64 checksum = 14;
   */
  checksum: bigint;
};

/**
 * Describes the message syncline.v1.Changes.
 * Use `create(ChangesSchema)` to create a new message.
 */
export const ChangesSchema: GenMessage<Changes> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 17);

/**
 * Links a device's temporary record id to the id the backend assigned.
 *
 * @generated from message syncline.v1.Link
 */
export type Link = Message<"syncline.v1.Link"> & {
  /**
   * @generated from field: string temp_id = 1;
   */
  tempId: string;

  /**
   * @generated from field: string id = 2;
   */
  id: string;
};

/**
 * Describes the message syncline.v1.Link.
 * Use `create(LinkSchema)` to create a new message.
 */
export const LinkSchema: GenMessage<Link> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 18);

/**
 * State of a subscription.
 *
 * @generated from message syncline.v1.SyncState
 */
export type SyncState = Message<"syncline.v1.SyncState"> & {
  /**
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * @generated from field: string key = 2;
   */
  key: string;

  /**
   * @generated from field: syncline.v1.SyncStatus status = 3;
   */
  status: SyncStatus;

  /**
   * The device's cursor once it has applied everything sent so far.
   *
   * @generated from field: uint64 cursor = 4;
   */
  cursor: bigint;

  /**
   * Live records in the partition at `cursor`.
   *
   * @generated from field: uint64 total = 5;
   */
  total: bigint;

  /**
   * Wrapping sum over the live records of a 64-bit hash of (id, version): FNV-1a 64 over
   * the id's UTF-8 bytes, a zero byte, and the version as 8 little-endian bytes. A device
   * whose cursor equals `cursor` and whose records give a different value (or count) must
   * resubscribe from cursor 0. (Live changes may already have been applied past `cursor`
   * when this arrives; the device then skips the comparison: live Changes frames carry the
   * checksum at their own `to`, except the first frames of a commit split by bytes.)
   *
   * @generated from field: uint64 checksum = 6;
   */
  checksum: bigint;

  /**
   * Set with status ERROR.
   *
   * @generated from field: syncline.v1.Error error = 7;
   */
  error?: Error | undefined;
};

/**
 * Describes the message syncline.v1.SyncState.
 * Use `create(SyncStateSchema)` to create a new message.
 */
export const SyncStateSchema: GenMessage<SyncState> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 19);

/**
 * The server has durably queued a mutation (or already knows its outcome).
 *
 * @generated from message syncline.v1.MutationAck
 */
export type MutationAck = Message<"syncline.v1.MutationAck"> & {
  /**
   * @generated from field: string mutation_id = 1;
   */
  mutationId: string;

  /**
   * Position in the device's queue (0 when the outcome is already known).
   *
   * @generated from field: uint64 queued = 2;
   */
  queued: bigint;
};

/**
 * Describes the message syncline.v1.MutationAck.
 * Use `create(MutationAckSchema)` to create a new message.
 */
export const MutationAckSchema: GenMessage<MutationAck> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 20);

/**
 * The outcome of a mutation.
 *
 * @generated from message syncline.v1.MutationResult
 */
export type MutationResult = Message<"syncline.v1.MutationResult"> & {
  /**
   * @generated from field: string mutation_id = 1;
   */
  mutationId: string;

  /**
   * @generated from field: bool ok = 2;
   */
  ok: boolean;

  /**
   * The record as the backend stored it (ok = true, create and update). Its version is 0:
   * the record's partition sequence arrives with the Changes that log it.
   *
   * @generated from field: syncline.v1.Record record = 3;
   */
  record?: Record | undefined;

  /**
   * For creates: the device's temporary id and the backend's id.
   *
   * @generated from field: syncline.v1.Link link = 4;
   */
  link?: Link | undefined;

  /**
   * Set when ok = false.
   *
   * @generated from field: syncline.v1.MutationError error = 5;
   */
  error?: MutationError | undefined;
};

/**
 * Describes the message syncline.v1.MutationResult.
 * Use `create(MutationResultSchema)` to create a new message.
 */
export const MutationResultSchema: GenMessage<MutationResult> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 21);

/**
 * Why a mutation failed.
 *
 * @generated from message syncline.v1.MutationError
 */
export type MutationError = Message<"syncline.v1.MutationError"> & {
  /**
   * Which kind of mutation failed.
   *
   * @generated from field: syncline.v1.MutationOp op = 1;
   */
  op: MutationOp;

  /**
   * @generated from field: syncline.v1.ErrorCode code = 2;
   */
  code: ErrorCode;

  /**
   * The backend's message, as given.
   *
   * @generated from field: string message = 3;
   */
  message: string;

  /**
   * On CONFLICT: the backend's current record.
   *
   * @generated from field: syncline.v1.Record current = 4;
   */
  current?: Record | undefined;
};

/**
 * Describes the message syncline.v1.MutationError.
 * Use `create(MutationErrorSchema)` to create a new message.
 */
export const MutationErrorSchema: GenMessage<MutationError> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 22);

/**
 * The answer to a Search, from the source's channel (deadline: 30 s).
 *
 * @generated from message syncline.v1.SearchResult
 */
export type SearchResult = Message<"syncline.v1.SearchResult"> & {
  /**
   * @generated from field: string search_id = 1;
   */
  searchId: string;

  /**
   * @generated from field: repeated syncline.v1.Record records = 2;
   */
  records: Record[];

  /**
   * Total matches known to the backend.
   *
   * @generated from field: uint64 total = 3;
   */
  total: bigint;

  /**
   * Set when the search failed (UNKNOWN_SOURCE, FORBIDDEN for a source without a channel,
   * BAD_REQUEST, UNAVAILABLE, TIMEOUT, ...).
   *
   * @generated from field: syncline.v1.Error error = 4;
   */
  error?: Error | undefined;

  /**
   * When set, the channel asks the device to merge the records into its local copy of this
   * partition (of the searched source); otherwise they are for display only.
   *
   * @generated from field: string merge_key = 5;
   */
  mergeKey: string;
};

/**
 * Describes the message syncline.v1.SearchResult.
 * Use `create(SearchResultSchema)` to create a new message.
 */
export const SearchResultSchema: GenMessage<SearchResult> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 23);

/**
 * @generated from message syncline.v1.RpcReply
 */
export type RpcReply = Message<"syncline.v1.RpcReply"> & {
  /**
   * @generated from field: string call_id = 1;
   */
  callId: string;

  /**
   * @generated from oneof syncline.v1.RpcReply.result
   */
  result: {
    /**
     * The backend's reply payload.
     *
     * @generated from field: bytes payload = 2;
     */
    value: Uint8Array;
    case: "payload";
  } | {
    /**
     * Why the call failed: BAD_REQUEST, NOT_FOUND (unknown service or method), FORBIDDEN,
     * UNAVAILABLE (backend down or overloaded), TIMEOUT, RESOURCE_EXHAUSTED or INTERNAL
     * (generic message); rpc.proto maps backend statuses to these.
     *
     * @generated from field: syncline.v1.Error error = 3;
     */
    value: Error;
    case: "error";
  } | { case: undefined; value?: undefined };
};

/**
 * Describes the message syncline.v1.RpcReply.
 * Use `create(RpcReplySchema)` to create a new message.
 */
export const RpcReplySchema: GenMessage<RpcReply> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 24);

/**
 * Answers a BulkRequest: the files are ready to download (or the request failed: `error`).
 *
 * Download each file with `GET <url>` and the header `Authorization: Bearer <token>`; the
 * server streams it from disk and honours `Range` (a cut download resumes with
 * `Range: bytes=<received>-` and gets 206). Refusals are JSON `{"code", "message"}`: 401 for
 * a missing, forged or expired token (ask again with a new BulkRequest), 403 for a token of
 * another file or user, 404 for a file that is gone (garbage-collected after
 * bulk.file_ttl_secs: ask again). Tokens last bulk.token_ttl_secs.
 *
 * Then check the file (its meta table's checksum and record_count against its records, see
 * docs/BULK.md), replace the partition's local data with it in one step, and Subscribe with
 * `cursor` = the file's sequence: the log from there brings what changed since.
 *
 * @generated from message syncline.v1.BulkReady
 */
export type BulkReady = Message<"syncline.v1.BulkReady"> & {
  /**
   * @generated from field: string request_id = 1;
   */
  requestId: string;

  /**
   * The first file's url, token and every file's sequence by source, for devices that
   * predate `files` (one source per request).
   *
   * @generated from field: string url = 2;
   */
  url: string;

  /**
   * @generated from field: string token = 3;
   */
  token: string;

  /**
   * @generated from field: map<string, uint64> cursors = 4;
   */
  cursors: { [key: string]: bigint };

  /**
   * One entry per partition that got a file, in the order of BulkRequest.sources.
   *
   * @generated from field: repeated syncline.v1.BulkFile files = 5;
   */
  files: BulkFile[];

  /**
   * Sources whose partitions are below BulkRequest.min_records: page through them instead.
   *
   * @generated from field: repeated string page_instead = 6;
   */
  pageInstead: string[];

  /**
   * Set when no file could be made (unknown source, forbidden partition, a store failure,
   * too many bulk jobs queued): nothing else is set; the device may page instead or ask
   * again later, as the code says.
   *
   * @generated from field: syncline.v1.Error error = 7;
   */
  error?: Error | undefined;
};

/**
 * Describes the message syncline.v1.BulkReady.
 * Use `create(BulkReadySchema)` to create a new message.
 */
export const BulkReadySchema: GenMessage<BulkReady> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 25);

/**
 * One partition's snapshot file.
 *
 * @generated from message syncline.v1.BulkFile
 */
export type BulkFile = Message<"syncline.v1.BulkFile"> & {
  /**
   * @generated from field: string source = 1;
   */
  source: string;

  /**
   * @generated from field: string key = 2;
   */
  key: string;

  /**
   * Where to download it: an absolute http(s) URL when the server has bulk.public_url set,
   * else a path (`/v1/bulk/<file id>`) on the device endpoint's host and port (the socket's
   * URL with ws:// read as http://, wss:// as https://).
   *
   * @generated from field: string url = 3;
   */
  url: string;

  /**
   * Bearer credential for this file and this user only.
   *
   * @generated from field: string token = 4;
   */
  token: string;

  /**
   * Unix time in milliseconds when `token` stops being accepted.
   *
   * @generated from field: int64 token_expires_at_ms = 5;
   */
  tokenExpiresAtMs: bigint;

  /**
   * The sequence the file holds the partition at: the cursor to subscribe with afterwards.
   *
   * @generated from field: uint64 sequence = 6;
   */
  sequence: bigint;

  /**
   * Live records in the file, and their checksum (as in SyncState), also in its meta table.
   *
   * @generated from field: uint64 record_count = 7;
   */
  recordCount: bigint;

  /**
   * @generated from field: uint64 checksum = 8;
   */
  checksum: bigint;

  /**
   * The file's size in bytes.
   *
   * @generated from field: uint64 bytes = 9;
   */
  bytes: bigint;
};

/**
 * Describes the message syncline.v1.BulkFile.
 * Use `create(BulkFileSchema)` to create a new message.
 */
export const BulkFileSchema: GenMessage<BulkFile> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 26);

/**
 * An operator's command to the device.
 *
 * Commands are durable on the server: each is stored before it is sent, and the server
 * sends it until the device acknowledges it. A connected device gets it at once; a device
 * that is offline gets it on its next connection, right after Welcome and before any other
 * frame of the session (a locked device, whose Hello is refused, gets its unacknowledged
 * commands right before the fatal Error FORBIDDEN). A command not acknowledged is sent again
 * after each later Welcome, so a device may see the same command_id more than once: it acts
 * on a command_id once and acknowledges it every time.
 *
 * Acknowledging (CommandAck): the device first makes the command's effect durable (local
 * data dropped, session token forgotten, ...) together with a record of the command_id as
 * "acted on, ack unsent", then sends CommandAck if its session is open (for wipe and logout
 * before its Logout frame; for lock before it closes), and keeps the record until the ack
 * has been sent. A command that arrives without an open session (before a refused Hello's
 * Error), or whose ack could not be sent, is acknowledged after the device's next Welcome,
 * before its Subscribes. Acks are idempotent: when in doubt, send again.
 *
 * What the device does:
 * - LOCK: stop syncing, forget the session token and report the app locked until the user
 *   logs in again with the password. The server refuses the device's Hellos (Error
 *   FORBIDDEN, close 4003) until an operator unlocks it. Local data is kept.
 * - WIPE: delete every local record and the offline mutation queue, forget the session
 *   token, acknowledge, then send Logout. The server has already revoked the device's
 *   session tokens.
 * - RESYNC: drop every local partition and subscribe to each again from cursor 0 (the
 *   checksum of the new copy is verified as usual); the session stays open.
 * - LOGOUT: forget the session token, acknowledge, then send Logout. The server has already
 *   revoked the device's session tokens.
 * Unlocking is done on the server alone; it is never sent to the device.
 *
 * @generated from message syncline.v1.Command
 */
export type Command = Message<"syncline.v1.Command"> & {
  /**
   * @generated from field: syncline.v1.CommandKind kind = 1;
   */
  kind: CommandKind;

  /**
   * Human-readable reason, shown to the user where appropriate.
   *
   * @generated from field: string reason = 2;
   */
  reason: string;

  /**
   * The command's id, unique on this server; echoed in CommandAck.
   *
   * @generated from field: string command_id = 3;
   */
  commandId: string;
};

/**
 * Describes the message syncline.v1.Command.
 * Use `create(CommandSchema)` to create a new message.
 */
export const CommandSchema: GenMessage<Command> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 27);

/**
 * A typed error. `fatal` errors are followed by a close frame.
 *
 * @generated from message syncline.v1.Error
 */
export type Error = Message<"syncline.v1.Error"> & {
  /**
   * @generated from field: syncline.v1.ErrorCode code = 1;
   */
  code: ErrorCode;

  /**
   * Human-readable detail; generic for INTERNAL.
   *
   * @generated from field: string message = 2;
   */
  message: string;

  /**
   * True when the server closes the connection after this frame.
   *
   * @generated from field: bool fatal = 3;
   */
  fatal: boolean;

  /**
   * The partition, mutation, search or call the error is about, when there is one.
   *
   * @generated from field: string source = 4;
   */
  source: string;

  /**
   * @generated from field: string key = 5;
   */
  key: string;
};

/**
 * Describes the message syncline.v1.Error.
 * Use `create(ErrorSchema)` to create a new message.
 */
export const ErrorSchema: GenMessage<Error> = /*@__PURE__*/
  messageDesc(file_syncline_v1_device, 28);

/**
 * @generated from enum syncline.v1.MutationOp
 */
export enum MutationOp {
  /**
   * @generated from enum value: MUTATION_OP_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * @generated from enum value: MUTATION_OP_CREATE = 1;
   */
  CREATE = 1,

  /**
   * @generated from enum value: MUTATION_OP_UPDATE = 2;
   */
  UPDATE = 2,

  /**
   * @generated from enum value: MUTATION_OP_DELETE = 3;
   */
  DELETE = 3,
}

/**
 * Describes the enum syncline.v1.MutationOp.
 */
export const MutationOpSchema: GenEnum<MutationOp> = /*@__PURE__*/
  enumDesc(file_syncline_v1_device, 0);

/**
 * @generated from enum syncline.v1.SyncStatus
 */
export enum SyncStatus {
  /**
   * @generated from enum value: SYNC_STATUS_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * Catch-up pages are being sent.
   *
   * @generated from enum value: SYNC_STATUS_IN_PROGRESS = 1;
   */
  IN_PROGRESS = 1,

  /**
   * The device has everything up to `cursor`; live changes follow as they commit.
   *
   * @generated from enum value: SYNC_STATUS_CAUGHT_UP = 2;
   */
  CAUGHT_UP = 2,

  /**
   * The subscription failed; see `error`. The device may resubscribe later.
   *
   * @generated from enum value: SYNC_STATUS_ERROR = 3;
   */
  ERROR = 3,

  /**
   * The device's cursor is unusable (partition reset or compacted past it); a snapshot
   * follows.
   *
   * @generated from enum value: SYNC_STATUS_RESET = 4;
   */
  RESET = 4,

  /**
   * The source's schema changed (its channel described different fields, types or
   * capabilities than before): records the device holds may no longer match it. The device
   * drops what it holds of the partition and subscribes again from cursor 0 (its queued
   * mutations stay queued); it should tell the app, which may have to migrate its own
   * views. Sent once to every subscribed device when the server notices the change (at
   * start, on its re-describe interval, or when the channel's stream reconnects).
   *
   * @generated from enum value: SYNC_STATUS_SCHEMA_CHANGED = 5;
   */
  SCHEMA_CHANGED = 5,
}

/**
 * Describes the enum syncline.v1.SyncStatus.
 */
export const SyncStatusSchema: GenEnum<SyncStatus> = /*@__PURE__*/
  enumDesc(file_syncline_v1_device, 1);

/**
 * @generated from enum syncline.v1.CommandKind
 */
export enum CommandKind {
  /**
   * @generated from enum value: COMMAND_KIND_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * Lock the app until the user authenticates again.
   *
   * @generated from enum value: COMMAND_KIND_LOCK = 1;
   */
  LOCK = 1,

  /**
   * Delete all local data (records and offline mutation queue), then log out.
   *
   * @generated from enum value: COMMAND_KIND_WIPE = 2;
   */
  WIPE = 2,

  /**
   * Drop local partitions and resubscribe from cursor 0.
   *
   * @generated from enum value: COMMAND_KIND_RESYNC = 3;
   */
  RESYNC = 3,

  /**
   * Forget the session token and log out.
   *
   * @generated from enum value: COMMAND_KIND_LOGOUT = 4;
   */
  LOGOUT = 4,
}

/**
 * Describes the enum syncline.v1.CommandKind.
 */
export const CommandKindSchema: GenEnum<CommandKind> = /*@__PURE__*/
  enumDesc(file_syncline_v1_device, 2);

/**
 * @generated from enum syncline.v1.ErrorCode
 */
export enum ErrorCode {
  /**
   * @generated from enum value: ERROR_CODE_UNSPECIFIED = 0;
   */
  UNSPECIFIED = 0,

  /**
   * The frame could not be decoded or is invalid (missing fields, bad values).
   *
   * @generated from enum value: ERROR_CODE_BAD_REQUEST = 1;
   */
  BAD_REQUEST = 1,

  /**
   * No session (frame before Hello), wrong credentials, or an expired or forged token.
   *
   * @generated from enum value: ERROR_CODE_UNAUTHENTICATED = 2;
   */
  UNAUTHENTICATED = 2,

  /**
   * The user may not access the partition, or the device is locked.
   *
   * @generated from enum value: ERROR_CODE_FORBIDDEN = 3;
   */
  FORBIDDEN = 3,

  /**
   * The source is not configured.
   *
   * @generated from enum value: ERROR_CODE_UNKNOWN_SOURCE = 4;
   */
  UNKNOWN_SOURCE = 4,

  /**
   * Hello.protocol_version is not supported.
   *
   * @generated from enum value: ERROR_CODE_UNSUPPORTED_VERSION = 5;
   */
  UNSUPPORTED_VERSION = 5,

  /**
   * A limit was hit (subscriptions per connection, queue length, concurrency).
   *
   * @generated from enum value: ERROR_CODE_RESOURCE_EXHAUSTED = 6;
   */
  RESOURCE_EXHAUSTED = 6,

  /**
   * A mutation conflicted with the backend's current record.
   *
   * @generated from enum value: ERROR_CODE_CONFLICT = 7;
   */
  CONFLICT = 7,

  /**
   * The thing asked for does not exist.
   *
   * @generated from enum value: ERROR_CODE_NOT_FOUND = 8;
   */
  NOT_FOUND = 8,

  /**
   * A backend or the store is unavailable; retry later.
   *
   * @generated from enum value: ERROR_CODE_UNAVAILABLE = 9;
   */
  UNAVAILABLE = 9,

  /**
   * A deadline passed.
   *
   * @generated from enum value: ERROR_CODE_TIMEOUT = 10;
   */
  TIMEOUT = 10,

  /**
   * The server failed; the message is generic.
   *
   * @generated from enum value: ERROR_CODE_INTERNAL = 11;
   */
  INTERNAL = 11,

  /**
   * The feature is declared but not available on this server yet.
   *
   * @generated from enum value: ERROR_CODE_UNIMPLEMENTED = 12;
   */
  UNIMPLEMENTED = 12,
}

/**
 * Describes the enum syncline.v1.ErrorCode.
 */
export const ErrorCodeSchema: GenEnum<ErrorCode> = /*@__PURE__*/
  enumDesc(file_syncline_v1_device, 3);

