// The sync server of @automerge/automerge-repo-sync-server 0.2.8 (its src/server.js), with the
// current automerge-repo 2.x libraries instead of the 1.x ones that package pins. The only other
// changes: no express (it only served a "/" greeting), and it listens on 127.0.0.1.
//
//   PORT=3030 DATA_DIR=.amrg node server.mjs
import fs from "node:fs"
import http from "node:http"
import os from "node:os"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const dir = process.env.DATA_DIR ?? ".amrg"
fs.mkdirSync(dir, { recursive: true })
const port = process.env.PORT !== undefined ? parseInt(process.env.PORT, 10) : 3030

const socket = new WebSocketServer({ noServer: true })
new Repo({
  network: [new NodeWSServerAdapter(socket)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `storage-server-${os.hostname()}`,
  // As the package: a server only syncs documents a peer asks for by id.
  sharePolicy: async () => false,
})

const server = http.createServer((_req, res) => {
  res.end("automerge-repo sync server is running")
})
server.on("upgrade", (request, s, head) => {
  socket.handleUpgrade(request, s, head, (ws) => socket.emit("connection", ws, request))
})
server.listen(port, "127.0.0.1", () => {
  console.log(`Listening on port ${server.address().port}`)
})
