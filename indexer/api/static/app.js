// The search page of `indexer serve`: one module, no dependencies, no build step.
//
// The URL holds the search (/?q=TEXT&genre=jazz, or /?similar=ID), so a search is a link; the
// page reads it on load and on back/forward, and writes it on submit. The API key, when the
// server has one, is asked for once, kept in this tab (or on this device when asked), and sent
// in the X-API-Key header only; POST /session turns it into the cookie that lets the audio
// element in (it cannot send headers), so the key never appears in a URL.

const LIMIT = 20;
const KEY = "indexer-api-key";

// The filters: each is a form field and a URL parameter of the same name, and `value` turns
// its text into the API filter's value (or throws a message for the user).
const FILTERS = [
  { name: "artist", value: text },
  { name: "album", value: text },
  { name: "genre", value: text },
  { name: "year_min", value: year },
  { name: "year_max", value: year },
  { name: "duration_min", value: seconds },
  { name: "duration_max", value: seconds },
  { name: "folder", value: folder },
  { name: "tags", value: tags },
];

const $ = (id) => document.getElementById(id);
const form = $("search");
const query = $("q");
const statusLine = $("status");
const heading = $("heading");
const list = $("hits");
const audio = $("audio");
const player = $("player");
const nowPlaying = $("now-playing");

let apiKey = sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
let sessionReady = null; // the POST /session in flight or done: Promise<boolean>
let asking = null; // the key dialog, while it is open: Promise<boolean>
let current = null; // AbortController of the request whose results are wanted
const shown = new Map(); // track id -> hit, for the player's title

// ---- values -----------------------------------------------------------------------------------

function text(s) {
  return s;
}

function year(s) {
  if (!/^\d{1,4}$/.test(s)) throw new Error("a year is a number such as 1995");
  return Number(s);
}

function seconds(s) {
  const m = /^(?:(\d+):([0-5]\d)|(\d+(?:\.\d+)?))$/.exec(s);
  if (!m) throw new Error("a length is m:ss or seconds, such as 3:30 or 210");
  return m[3] !== undefined ? Number(m[3]) : Number(m[1]) * 60 + Number(m[2]);
}

function folder(s) {
  if (!s.startsWith("/")) throw new Error("a folder is an absolute path, such as /music/jazz");
  return s;
}

// "piano, jazz" -> ["piano", "jazz"]: facets a tagged model heard, every one to match
function tags(s) {
  const list = s.split(",").map((t) => t.trim()).filter(Boolean);
  if (!list.length) throw new Error("tags are words such as piano, jazz (comma-separated)");
  if (list.some((t) => t.length > 64)) throw new Error("a tag is at most 64 characters");
  return list;
}

export function clock(s) {
  const whole = Math.round(s);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const sec = String(whole % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

// ---- the key and the API ----------------------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h["X-API-Key"] = apiKey;
  return h;
}

// POST /session: checks the key (401 when the server wants another) and sets the audio cookie
async function openSession() {
  const r = await fetch("/session", { method: "POST", headers: headers() });
  if (r.status === 401) return false;
  if (!r.ok) throw new Error(`the server answered ${r.status}`);
  return true;
}

function session() {
  sessionReady ??= openSession().catch((err) => {
    sessionReady = null;
    throw err;
  });
  return sessionReady;
}

// Asks for the key until the server takes one; false if the user cancels
function askKey(message) {
  const dialog = $("key-dialog");
  const input = $("key");
  const error = $("key-error");
  error.textContent = message;
  input.value = "";
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    const done = (ok) => {
      $("key-form").removeEventListener("submit", submit);
      $("key-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      dialog.close();
      resolve(ok);
    };
    const submit = async (event) => {
      event.preventDefault();
      apiKey = input.value.trim();
      sessionReady = null;
      let ok;
      try {
        ok = await session();
      } catch (err) {
        error.textContent = `Cannot reach the server: ${err.message}`;
        return;
      }
      if (!ok) {
        error.textContent = "The server does not take this key.";
        input.select();
        return;
      }
      sessionStorage.setItem(KEY, apiKey);
      if ($("remember").checked) localStorage.setItem(KEY, apiKey);
      else localStorage.removeItem(KEY);
      done(true);
    };
    const cancel = (event) => {
      event.preventDefault();
      done(false);
    };
    $("key-form").addEventListener("submit", submit);
    $("key-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
  });
}

class Refused extends Error {}

// Makes sure the server takes our key (asking for one if not; one dialog for all callers)
async function authorised() {
  if (await session()) return;
  if (!asking) {
    const stored = apiKey;
    if (stored) {
      sessionStorage.removeItem(KEY);
      localStorage.removeItem(KEY);
    }
    asking = askKey(stored ? "The stored key no longer works." : "").finally(() => {
      asking = null;
    });
  }
  if (!(await asking)) throw new Refused("This server needs its API key to search.");
}

async function api(method, path, body, signal, again = true) {
  await authorised();
  const r = await fetch(path, {
    method,
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (r.status === 401 && again) {
    sessionReady = null; // the key changed on the server: check it (and ask) once more
    return api(method, path, body, signal, false);
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(problem(data.detail) || `the server answered ${r.status}`);
  return data;
}

function problem(detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return detail ? String(detail) : "";
}

// ---- the URL and the form ---------------------------------------------------------------------

function fillForm(params) {
  query.value = params.get("q") || "";
  let any = false;
  for (const f of FILTERS) {
    const v = params.get(f.name) || "";
    form.elements[f.name].value = v;
    any ||= v !== "";
  }
  if (any) $("filters").open = true;
}

// The form as URL parameters, or null after telling the user which field is wrong
function formParams() {
  const params = new URLSearchParams();
  params.set("q", query.value.trim());
  for (const f of FILTERS) {
    const input = form.elements[f.name];
    const v = input.value.trim();
    input.setCustomValidity("");
    if (!v) continue;
    try {
      f.value(v);
    } catch (err) {
      $("filters").open = true;
      input.setCustomValidity(err.message);
      input.reportValidity();
      return null;
    }
    params.set(f.name, v);
  }
  return params;
}

function filtersOf(params) {
  const filters = {};
  for (const f of FILTERS) {
    const v = (params.get(f.name) || "").trim();
    if (v) filters[f.name] = f.value(v);
  }
  return Object.keys(filters).length ? filters : undefined;
}

function limitOf(params) {
  const n = Number(params.get("limit"));
  return Number.isInteger(n) && n > 0 ? n : LIMIT;
}

// ---- searching --------------------------------------------------------------------------------

async function show(params) {
  current?.abort();
  const mine = new AbortController();
  current = mine;
  const similarTo = params.get("similar");
  const q = (params.get("q") || "").trim();
  list.replaceChildren();
  heading.hidden = true;
  statusLine.textContent = "";
  try {
    if (!similarTo && !q) {
      await authorised(); // ask for the key before the first search is typed
      return;
    }
    statusLine.textContent = similarTo ? "Finding similar tracks…" : "Searching…";
    const body = { limit: limitOf(params), filters: filtersOf(params), explain: true };
    let result;
    let title;
    if (similarTo) {
      const [hits, track] = await Promise.all([
        api("POST", "/similar", { ...body, id: similarTo }, mine.signal),
        api("GET", `/tracks/${encodeURIComponent(similarTo)}`, undefined, mine.signal),
      ]);
      result = hits;
      title = `Tracks like ${name(track)}`;
    } else {
      result = await api("POST", "/search", { ...body, query: q }, mine.signal);
      title = `Results for “${q}”`;
    }
    if (current !== mine) return;
    render(result.hits, title);
    const n = result.hits.length;
    statusLine.textContent = n
      ? `${n} track${n === 1 ? "" : "s"} in ${Math.round(result.took_ms)} ms`
      : "No matching tracks.";
  } catch (err) {
    if (err.name === "AbortError" || current !== mine) return;
    list.replaceChildren();
    heading.hidden = true;
    statusLine.textContent = err instanceof Refused ? err.message : `Error: ${err.message}`;
    if (err instanceof Refused) statusLine.append(" ", keyButton());
  }
}

function keyButton() {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = "Enter the key";
  b.addEventListener("click", () => show(new URLSearchParams(location.search)));
  return b;
}

function name(hit) {
  const title = hit.title || (hit.path || "").split("/").pop() || hit.id;
  return hit.artist ? `${hit.artist} – ${title}` : title;
}

// ---- results ----------------------------------------------------------------------------------

function render(hits, title) {
  heading.textContent = title;
  heading.hidden = false;
  shown.clear();
  const template = $("hit").content;
  const items = hits.map((hit, i) => {
    shown.set(hit.id, hit);
    const li = template.firstElementChild.cloneNode(true);
    li.dataset.trackId = hit.id;
    li.querySelector(".rank").textContent = `${i + 1}.`;
    li.querySelector(".title").textContent = hit.title || (hit.path || "").split("/").pop();
    li.querySelector(".artist").textContent = [hit.artist, hit.album].filter(Boolean).join(" · ");
    const ends = [...(hit.clips || []), ...hit.segments].map((c) => c.end);
    const length = hit.duration ?? Math.max(0, ...ends);
    li.querySelector(".duration").textContent = clock(length);
    li.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
    li.querySelector(".path").textContent = hit.path;
    li.querySelector(".path").title = hit.path;
    timeline(li.querySelector(".timeline"), hit, length);
    const best = hit.segments[0];
    const play = li.querySelector(".play");
    play.setAttribute("aria-label", `Play ${name(hit)}${best ? ` from ${clock(best.start)}` : ""}`);
    play.addEventListener("click", () => playTrack(hit, best ? best.start : 0));
    const similar = li.querySelector(".similar");
    similar.setAttribute("aria-label", `Tracks similar to ${name(hit)}`);
    similar.addEventListener("click", () => go(similarParams(hit.id)));
    return li;
  });
  list.replaceChildren(...items);
  if (audio.dataset.trackId) markPlaying();
}

// The bar: the whole track; the shaded strip: where the text happens, each clip's evidence from
// the track's lowest to its highest (what the segments are made from); the buttons: the best
// segments, numbered best first, each playing from its start
function timeline(bar, hit, length) {
  const span = length > 0 ? length : 1;
  const pct = (t) => `${Math.min(100, Math.max(0, (100 * t) / span))}%`;
  const clips = hit.clips || [];
  if (clips.length) {
    const low = Math.min(...clips.map((c) => c.score));
    const range = Math.max(...clips.map((c) => c.score)) - low || 1;
    const mid = clips.map((c) => (c.start + c.end) / 2);
    const stops = clips.map((c, i) => {
      const from = i ? (mid[i - 1] + mid[i]) / 2 : 0;
      const to = i + 1 < clips.length ? (mid[i] + mid[i + 1]) / 2 : span;
      const alpha = (0.08 + (0.92 * (c.score - low)) / range).toFixed(3);
      return `rgb(var(--match) / ${alpha}) ${pct(from)} ${pct(to)}`;
    });
    bar.querySelector(".strip").style.backgroundImage = `linear-gradient(to right, ${stops})`;
  }
  hit.segments.forEach((seg, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "segment";
    b.textContent = String(i + 1);
    b.style.left = pct(seg.start);
    b.style.width = pct(seg.end - seg.start);
    const when = `${clock(seg.start)}–${clock(seg.end)}`;
    b.title = `${when}, part ${i + 1} of the best, match ${seg.score.toFixed(3)}`;
    b.setAttribute("aria-label", `Play ${name(hit)} from ${clock(seg.start)} (part ${when})`);
    b.dataset.start = String(seg.start);
    b.addEventListener("click", (event) => {
      event.stopPropagation();
      playTrack(hit, seg.start);
    });
    bar.append(b);
  });
  // a click elsewhere on the bar plays from there (the player's own controls seek by keyboard)
  bar.addEventListener("click", (event) => {
    const box = bar.getBoundingClientRect();
    playTrack(hit, (span * (event.clientX - box.left)) / box.width);
  });
}

// ---- listening --------------------------------------------------------------------------------

let retried = false;

async function playTrack(hit, start) {
  try {
    await authorised(); // the audio cookie
  } catch (err) {
    statusLine.textContent = err.message;
    return;
  }
  if (audio.dataset.trackId !== hit.id) {
    audio.dataset.trackId = hit.id;
    audio.src = `/tracks/${encodeURIComponent(hit.id)}/audio`;
    retried = false;
  }
  // before the metadata is in, this sets where playback will start (HTML media, "default
  // playback start position"), so the seek needs no waiting
  audio.currentTime = Math.max(0, start);
  player.hidden = false;
  nowPlaying.textContent = `${name(hit)} · from ${clock(start)}`;
  markPlaying();
  audio.play().catch(() => {}); // refused autoplay or a failed load: see the error handler
}

function markPlaying() {
  for (const li of list.children) {
    const on = li.dataset.trackId === audio.dataset.trackId;
    li.classList.toggle("playing", on);
    if (on) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
    li.querySelector(".playhead").hidden = !on;
  }
  movePlayhead();
}

function movePlayhead() {
  const li = list.querySelector(".hit.playing");
  const hit = li && shown.get(li.dataset.trackId);
  if (!hit) return;
  const length = hit.duration || audio.duration || 1;
  li.querySelector(".playhead").style.left = `${Math.min(100, (100 * audio.currentTime) / length)}%`;
}

audio.addEventListener("timeupdate", movePlayhead);
audio.addEventListener("error", async () => {
  const id = audio.dataset.trackId;
  if (!id) return;
  if (!retried) {
    // an expired audio cookie looks like any failed load: renew it once and try again
    retried = true;
    const at = audio.currentTime;
    sessionReady = null;
    if (await session().catch(() => false)) {
      audio.src = `/tracks/${encodeURIComponent(id)}/audio`;
      audio.currentTime = at;
      audio.play().catch(() => {});
      return;
    }
  }
  nowPlaying.textContent = "This track cannot be played: its file is gone, or the browser does not play its format.";
});

// ---- navigation -------------------------------------------------------------------------------

// The similar-tracks view of a track, under the filters now in the URL
function similarParams(id) {
  const params = new URLSearchParams({ similar: id });
  const now = new URLSearchParams(location.search);
  for (const name of [...FILTERS.map((f) => f.name), "limit"]) {
    if (now.get(name)) params.set(name, now.get(name));
  }
  return params;
}

function go(params) {
  history.pushState(null, "", `/?${params}`);
  fillForm(params);
  show(params);
  $("results").focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const params = formParams();
  if (!params) return;
  const limit = new URLSearchParams(location.search).get("limit");
  if (limit) params.set("limit", limit);
  history.pushState(null, "", `/?${params}`);
  show(params);
});

for (const f of FILTERS) {
  form.elements[f.name].addEventListener("input", (event) => event.target.setCustomValidity(""));
}

window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  fillForm(params);
  show(params);
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    query.focus();
    query.select();
  }
});

const initial = new URLSearchParams(location.search);
fillForm(initial);
show(initial);
