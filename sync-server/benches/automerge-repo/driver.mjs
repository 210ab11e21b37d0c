// Client driver for the automerge-repo side of sync-server/benches/relay.rs.
//
//   node driver.mjs --url ws://127.0.0.1:PORT [--lib v2|v1] [--clients 200] [--group 4]
//                   [--secs 10] [--rate 10] [--chars 150] [--drain 60]
//
// Runs `clients` automerge-repo clients (one Repo and one WebSocket each) in groups of `group`
// sharing one document, the workload of the relay benchmark: every client appends a small entry
// ({n, t, s: `chars` characters of text}) to its own list in its group's document `rate` times
// per second for `secs` seconds. Relay latency = from the client making the change to each other
// client of its group seeing it in a "change" event. A group never spans two driver processes, so
// sender and receiver share one clock (performance.now()).
//
// Talks to the benchmark over stdio, one JSON object per line on stdout:
//   {"event":"ready"}            all clients connected and holding their group's document;
//                                the driver then waits for a "go" line on stdin
//   {"event":"sent"}             the paced phase is over (no more changes are made)
//   {"event":"result", ...}      after every client saw every change, or `drain` seconds:
//                                changes made, deliveries to other clients, lost (changes
//                                that did not reach every other client of their group),
//                                errors, the driver's CPU and event loop delay, latencies (ms)
// Setup errors go to stderr and exit with code 1.
import { monitorEventLoopDelay, performance } from "node:perf_hooks"
import readline from "node:readline"

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => {
    if (a.startsWith("--")) pairs.push([a.slice(2), all[i + 1]])
    return pairs
  }, []),
)
const num = (k, d) => (args[k] === undefined ? d : Number(args[k]))
const url = args.url
const lib = args.lib ?? "v2"
const clients = num("clients", 200)
const group = num("group", 4)
const secs = num("secs", 10)
const rate = num("rate", 10)
const chars = num("chars", 150)
const drain = num("drain", 60)
if (!url || !(clients > 0) || !(group > 0) || clients % group !== 0 || !(rate > 0)) {
  console.error("usage: driver.mjs --url ws://HOST:PORT [--clients N (a multiple of --group)] ...")
  process.exit(2)
}

// v2: automerge-repo 2.x (top level); v1: the 1.x libraries that
// @automerge/automerge-repo-sync-server 0.2.8 installs for itself.
const base =
  lib === "v1"
    ? "./node_modules/@automerge/automerge-repo-sync-server/node_modules/@automerge/"
    : "./node_modules/@automerge/"
const { Repo } = await import(`${base}automerge-repo/dist/entrypoints/fullfat.js`)
const ws = await import(`${base}automerge-repo-network-websocket/dist/index.js`)
const ClientAdapter = ws.WebSocketClientAdapter ?? ws.BrowserWebSocketClientAdapter

// An exception or rejection inside the libraries (not from this script) is counted and reported, and the
// run goes on: what it broke shows up as lost writes.
let errors = 0
const count = (e) => {
  if (errors++ === 0) console.error(`driver: uncaught exception: ${e?.stack ?? e}`)
}
process.on("uncaughtException", count)
process.on("unhandledRejection", count)

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
// Resolves once the line is handed to the pipe (a result line is larger than a pipe's buffer,
// and exiting before then would drop it).
const emit = (o) => new Promise((r) => process.stdout.write(JSON.stringify(o) + "\n", r))
const fail = (msg) => {
  console.error(`driver: ${msg}`)
  process.exit(1)
}
const docOf = async (handle) => handle.doc()

async function until(what, ms, cond) {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

async function find(repo, docUrl) {
  for (let attempt = 0; ; attempt++) {
    try {
      const found = repo.find(docUrl)
      const handle = found instanceof Promise ? await found : found
      if (handle.whenReady) await handle.whenReady()
      if (await docOf(handle)) return handle
    } catch (e) {
      if (attempt >= 20) throw e
    }
    await sleep(100 * (attempt + 1))
  }
}

// Setup: one repo per client; the first of each group creates the document with one list per
// member (created up front, so members never race to create them).
const repos = []
// In batches: a burst of hundreds of connections at once sometimes left a 1.x client that never
// joined.
for (let i = 0; i < clients; i += 20) {
  const batch = []
  for (let j = i; j < Math.min(i + 20, clients); j++) {
    batch.push(new Repo({ network: [new ClientAdapter(url)], peerId: `client-${process.pid}-${j}` }))
  }
  repos.push(...batch)
  await until("connections", 60_000, () => batch.every((r) => r.peers.length > 0))
}
const handles = new Array(clients)
const groups = clients / group
const initial = Object.fromEntries(Array.from({ length: group }, (_, k) => [`c${k}`, []]))
for (let g = 0; g < groups; g++) handles[g * group] = repos[g * group].create(initial)
await sleep(500) // the creators' first sync message reaches the server
await Promise.all(
  Array.from({ length: clients }, async (_, i) => {
    if (i % group === 0) return
    handles[i] = await find(repos[i], handles[i - (i % group)].url)
  }),
)
for (let i = 0; i < clients; i++) {
  const d = await docOf(handles[i])
  if (!d || Object.keys(d).length !== group) fail(`client ${i} has no document`)
}

// What each client has seen: per member of its group, how many entries (and their latencies).
const seen = Array.from({ length: clients }, () => new Array(group).fill(0))
const sent = new Array(clients).fill(0)
let latencies = []
let delivered = 0
let measuring = false
for (let i = 0; i < clients; i++) {
  const me = i % group
  handles[i].on("change", ({ doc }) => {
    const now = performance.now()
    for (let k = 0; k < group; k++) {
      if (k === me) continue
      const list = doc[`c${k}`]
      for (let j = seen[i][k]; j < list.length; j++) {
        if (measuring) latencies.push(Math.round((now - list[j].t) * 100) / 100)
        delivered++
      }
      seen[i][k] = list.length
    }
  })
}

await emit({ event: "ready" })
const rl = readline.createInterface({ input: process.stdin })
await new Promise((resolve) => rl.on("line", (l) => l.trim() === "go" && resolve()))

// Paced phase.
const text = "x".repeat(chars)
const loop = monitorEventLoopDelay({ resolution: 10 })
loop.enable()
const cpu0 = process.cpuUsage()
measuring = true
const period = 1000 / rate
const start = performance.now()
const timers = []
for (let i = 0; i < clients; i++) {
  const me = i % group
  const tick = () => {
    handles[i].change((d) => {
      d[`c${me}`].push({ n: sent[i], t: performance.now(), s: text })
    })
    sent[i]++
  }
  // Spread the clients' ticks over one period.
  timers.push(
    setTimeout(() => {
      tick()
      timers.push(setInterval(tick, period))
    }, (period * i) / clients),
  )
}
await sleep(secs * 1000)
timers.forEach((t) => clearTimeout(t))
const sentSecs = (performance.now() - start) / 1000
const cpu = process.cpuUsage(cpu0)
loop.disable()
await emit({ event: "sent" })

// Drain: every client must see every change of the others in its group.
const missing = () => {
  let m = 0
  for (let i = 0; i < clients; i++) {
    const g0 = i - (i % group)
    for (let k = 0; k < group; k++) if (k !== i % group) m += sent[g0 + k] - seen[i][k]
  }
  return m
}
const drainStart = performance.now()
while (missing() > 0 && performance.now() - drainStart < drain * 1000) await sleep(50)
const drainSecs = (performance.now() - drainStart) / 1000
// Lost: changes that did not reach every other client of their group.
let lost = 0
for (let i = 0; i < clients; i++) {
  const g0 = i - (i % group)
  let least = sent[i]
  for (let k = 0; k < group; k++) if (g0 + k !== i) least = Math.min(least, seen[g0 + k][i % group])
  lost += sent[i] - least
}
const changes = sent.reduce((a, b) => a + b, 0)
await emit({
  event: "result",
  clients,
  changes,
  secs: sentSecs,
  drain_secs: drainSecs,
  delivered,
  expected: changes * (group - 1),
  lost,
  missing: missing(),
  errors,
  client_cpu_pct: ((cpu.user + cpu.system) / 1000 / (sentSecs * 1000)) * 100,
  loop_delay_p99_ms: loop.percentile(99) / 1e6,
  latencies_ms: latencies,
})
rl.close()
await Promise.race([Promise.all(repos.map((r) => r.shutdown?.())), sleep(2000)])
process.exit(0)
