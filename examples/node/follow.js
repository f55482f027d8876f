#!/usr/bin/env node
// Follows a tailhub job to its end: the log's exact bytes on stdout, then exits with the
// job's exit code. A client of the contract in proto/tailhub/v1/tailhub.proto, in one file.
//
// Usage: node follow.js JOB_ID
//
// Connects to the daemon of the state directory ($TAILHUB_HOME, else ~/.tailhub) over its
// Unix socket; with TAILHUB_SERVER=HOST:PORT, over TCP with TLS (TAILHUB_CA: the CA's PEM
// file, else the system's roots) and a token (TAILHUB_TOKEN, or the file TAILHUB_TOKEN_FILE),
// sent as `authorization: Bearer <token>`.
//
// Exit codes: the job's own exit code when it has one; else 0 succeeded, 100 failed,
// 103 cancelled; 102 no such job, 104 no daemon answered (none within 10 s, or none came
// back within 60 s of a restart), 2 bad usage, 1 any other error (said on stderr). The same
// codes as the `tailhub` CLI.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const EXIT = { SUCCEEDED: 0, ERROR: 1, USAGE: 2, FAILED: 100, NOT_FOUND: 102, CANCELLED: 103, UNREACHABLE: 104 };
// How long to keep trying to get a stream back after the daemon went away (a restart), and
// to wait for a first answer (this example does not start a daemon; the CLI does).
const RECONNECT_TIMEOUT_MS = 60_000;
const FIRST_CONNECT_TIMEOUT_MS = 10_000;
const MIN_PAUSE_MS = 50;
const MAX_PAUSE_MS = 1000;

const PROTO = process.env.TAILHUB_PROTO ||
  path.join(__dirname, '..', '..', 'proto', 'tailhub', 'v1', 'tailhub.proto');

// Why each option: see README.md beside this file.
const LOADER_OPTIONS = {
  keepCase: true, // field names as in the .proto (job_id), not camelCase (jobId)
  longs: String, // uint64 ids, offsets and sizes as decimal strings: a JS number loses bytes past 2^53
  enums: String, // states as their names ('JOB_STATE_FAILED')
  defaults: true, // fields left at their default are present (a chunk at offset 0 has offset '0')
  oneofs: true, // SubscribeResponse.message names which of chunk/heartbeat/event/end/time_mark is set
};

function fail(code, message) {
  process.stderr.write(`follow.js: ${message}\n`);
  process.exit(code);
}

function stateDir() {
  const home = process.env.TAILHUB_HOME;
  if (home === '') fail(EXIT.USAGE, '$TAILHUB_HOME is set but empty; give a state directory, or unset it');
  const raw = home === undefined ? path.join(os.homedir(), '.tailhub') : home.replace(/^~(?=$|\/)/, os.homedir());
  return path.resolve(raw);
}

// The token: $TAILHUB_TOKEN itself (as for the `tailhub` CLI), else the file $TAILHUB_TOKEN_FILE.
function readToken() {
  let token = process.env.TAILHUB_TOKEN;
  const file = process.env.TAILHUB_TOKEN_FILE;
  if (!token && file) {
    try {
      token = fs.readFileSync(file, 'utf8');
    } catch (error) {
      fail(EXIT.USAGE, `cannot read the token file ${file}: ${error.message}`);
    }
    if (!token.trim()) fail(EXIT.USAGE, `the token file ${file} is empty`);
  }
  return token ? token.trim() : null;
}

// The target and credentials: the Unix socket by default, TCP + TLS + token with TAILHUB_SERVER.
function connection() {
  const server = process.env.TAILHUB_SERVER;
  if (!server) {
    return { target: `unix:${path.join(stateDir(), 'sock')}`, credentials: grpc.credentials.createInsecure() };
  }
  let tls;
  try {
    tls = grpc.credentials.createSsl(process.env.TAILHUB_CA ? fs.readFileSync(process.env.TAILHUB_CA) : null);
  } catch (error) {
    fail(EXIT.USAGE, `cannot read the CA file ${process.env.TAILHUB_CA}: ${error.message}`);
  }
  const token = readToken();
  if (token === null) return { target: server, credentials: tls };
  // Call credentials ride on every call, and only ever over TLS.
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    callback(null, metadata);
  });
  return { target: server, credentials: grpc.credentials.combineChannelCredentials(tls, bearer) };
}

function makeClient() {
  const definition = protoLoader.loadSync(PROTO, LOADER_OPTIONS);
  const { tailhub } = grpc.loadPackageDefinition(definition);
  const { target, credentials } = connection();
  const client = new tailhub.v1.TailhubService(target, credentials, {
    // Reconnect quickly after a daemon restart (gRPC's default backoff grows to two minutes).
    'grpc.initial_reconnect_backoff_ms': 50,
    'grpc.max_reconnect_backoff_ms': 500,
    // The daemon sends messages of up to 8 MiB (gRPC's default receive limit is 4 MiB).
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    // Keepalive, as the Python client: a daemon host that vanished without a FIN is noticed
    // within about 40 s (a ping every 30 s, 10 s for its answer), and the follower resumes.
    // Not below 10 s: the daemon refuses pings more often than that (GOAWAY).
    'grpc.keepalive_time_ms': 30000,
    'grpc.keepalive_timeout_ms': 10000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  return { client, target };
}

// The exit code a job's end stands for: its own exit code, else the CLI's code for its state.
function exitCodeOf(end) {
  if (end.exit_code !== undefined && end.exit_code !== null) {
    const code = end.exit_code;
    if (code >= 0 && code <= 255) return code;
    return code < 0 ? Math.min(128 - code, 255) : 255; // killed by signal N: 128 + N, as a shell says
  }
  if (end.state === 'JOB_STATE_SUCCEEDED') return EXIT.SUCCEEDED;
  if (end.state === 'JOB_STATE_CANCELLED') return EXIT.CANCELLED;
  return EXIT.FAILED;
}

// Writes bytes to stdout, waiting when the pipe is full (a slow reader must not cost memory).
function write(data) {
  return new Promise((resolve, reject) => {
    if (process.stdout.write(data, (error) => (error ? reject(error) : undefined))) resolve();
    else process.stdout.once('drain', resolve);
  });
}

// One Subscribe stream from `offset`. Resolves with the End message, or with null when the
// stream broke in a way a reconnect can mend (the daemon stopping or gone); rejects otherwise.
// `progress` is called for every message (so the caller knows the daemon answered).
function streamOnce(client, jobId, cursor, progress) {
  return new Promise((resolve, reject) => {
    const call = client.Subscribe({ job_id: jobId, offset: cursor.next.toString(), follow: true });
    let end = null;
    let writing = Promise.resolve();
    call.on('data', (response) => {
      progress();
      if (response.message === 'chunk') {
        const { offset, data } = response.chunk;
        if (BigInt(offset) !== cursor.next) {
          call.cancel();
          reject(new Error(`expected bytes at offset ${cursor.next}, got offset ${offset}`));
          return;
        }
        cursor.next += BigInt(data.length);
        // Back-pressure: stop reading the stream while stdout is full.
        call.pause();
        writing = writing.then(() => write(data)).then(() => call.resume(), (error) => {
          call.cancel();
          reject(error);
        });
      } else if (response.message === 'end') {
        end = response.end;
      }
      // heartbeat, event, time_mark: nothing to write (events could go to stderr).
    });
    call.on('error', (error) => {
      writing.then(() => {
        // A certificate the client does not trust will not get better by retrying.
        const untrusted = /certificate/i.test(error.details || '');
        if ((error.code === grpc.status.UNAVAILABLE && !untrusted) || error.code === grpc.status.CANCELLED) {
          cursor.lastError = error.details;
          resolve(null);
        } else {
          reject(error);
        }
      }, reject);
    });
    call.on('end', () => {
      // (After an error, 'end' may follow; the promise is settled already then.)
      writing.then(() => resolve(end), reject);
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function waitForReady(client, deadline) {
  return new Promise((resolve) => client.waitForReady(deadline, () => resolve()));
}

async function follow(client, target, jobId) {
  const cursor = { next: 0n, lastError: '' };
  let answered = false;
  let downSince = null;
  let pause = MIN_PAUSE_MS;
  for (;;) {
    const end = await streamOnce(client, jobId, cursor, () => {
      answered = true;
      downSince = null;
      pause = MIN_PAUSE_MS;
    });
    if (end !== null) return end;
    // The stream broke (daemon stopping or restarting): wait for it, resume at the next byte.
    const now = Date.now();
    if (downSince === null) downSince = now;
    const timeout = answered ? RECONNECT_TIMEOUT_MS : FIRST_CONNECT_TIMEOUT_MS;
    if (now - downSince > timeout) {
      fail(
        EXIT.UNREACHABLE,
        answered
          ? `lost the daemon on ${target} and none came back within ${timeout / 1000}s (${cursor.lastError})`
          : `no tailhub daemon answers on ${target} (${cursor.lastError})`,
      );
    }
    await sleep(pause); // a stopping daemon refuses new streams until it is gone
    pause = Math.min(pause * 2, MAX_PAUSE_MS);
    await waitForReady(client, downSince + timeout);
  }
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 1 || !/^[1-9][0-9]{0,19}$/.test(args[0]) || BigInt(args[0]) >= 2n ** 64n) {
    fail(EXIT.USAGE, 'usage: node follow.js JOB_ID   (a job id, as `tailhub jobs queue` shows)');
  }
  const jobId = args[0]; // a decimal string: uint64 fields take strings
  const { client, target } = makeClient();
  let end;
  try {
    end = await follow(client, target, jobId);
  } catch (error) {
    if (error.code === grpc.status.NOT_FOUND) fail(EXIT.NOT_FOUND, error.details);
    if (error.code === grpc.status.UNAUTHENTICATED || error.code === grpc.status.PERMISSION_DENIED) {
      fail(EXIT.ERROR, `${target} refused the token: ${error.details}`);
    }
    if (/certificate/i.test(error.details || '')) {
      fail(EXIT.ERROR, `TLS with ${target} failed: ${error.details} (is TAILHUB_CA the daemon's CA?)`);
    }
    fail(EXIT.ERROR, error.details || error.message);
  }
  client.close();
  if (end.state === 'JOB_STATE_FAILED' && end.reason) process.stderr.write(`job ${jobId} failed: ${end.reason}\n`);
  process.exitCode = exitCodeOf(end);
}

// stdout closed by the reader (`| head`): stop quietly, as a shell tool does.
process.stdout.on('error', (error) => {
  if (error.code === 'EPIPE') process.exit(EXIT.ERROR);
  throw error;
});

main();
