// Opens Nexus sync documents with the JavaScript Automerge library, prints what it reads in the
// documented schema (docs/SYNC.md), and makes changes there that must merge back into Nexus.
//
//   node interop.mjs COMPANION_IN CONVERSATION_IN COMPANION_OUT CONVERSATION_OUT NEW_MEMORY_ID NEW_MESSAGE_ID
import * as A from "@automerge/automerge";
import fs from "node:fs";

const [companionIn, conversationIn, companionOut, conversationOut, memoryId, messageId] =
  process.argv.slice(2);
const str = (v) => (v === null || v === undefined ? v : String(v));

let companion = A.load(new Uint8Array(fs.readFileSync(companionIn)));
let conversation = A.load(new Uint8Array(fs.readFileSync(conversationIn)));

const messages = Object.entries(conversation.messages)
  .map(([id, m]) => ({ id, role: str(m.role), text: str(m.text), created_at: m.created_at }))
  .sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
const summary = {
  companion: {
    name: str(companion.name),
    schema: companion.schema,
    profile_name: str(companion.profile.name),
    personality: str(companion.profile.personality),
    deleted: companion.profile.deleted,
    trust: companion.persona.trust,
    memories: Object.values(companion.memories).map((m) => str(m.text)).sort(),
    embedding_bytes: Object.values(companion.memories).map((m) => m.embedding.length),
  },
  conversation: {
    name: str(conversation.name),
    companion_id: str(conversation.conversation.companion_id),
    messages: messages.map((m) => `${m.role}: ${m.text}`),
  },
};
console.log(JSON.stringify(summary));

companion = A.change(companion, "edited in JavaScript", (d) => {
  d.profile.personality = "edited in JavaScript";
  d.memories[memoryId] = {
    text: "Added in JavaScript.",
    kind: "fact",
    subject: "js",
    importance: 0.75,
    pinned: false,
    embedding: new Uint8Array(0),
    source_message_ids: "",
    created_at: 5000,
    updated_at: 5000,
    last_used_at: null,
    superseded_by: null,
  };
});
conversation = A.change(conversation, (d) => {
  d.messages[messageId] = { role: "user", text: "Hello from JavaScript", created_at: 6000, token_count: 0 };
});
fs.writeFileSync(companionOut, A.save(companion));
fs.writeFileSync(conversationOut, A.save(conversation));
