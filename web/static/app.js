// gatemesh serve: the page. It draws nothing itself: the pictures are SVG made by viz/ on the
// server and pushed over the WebSocket; this file only shows them, lists what the server says,
// and sends validated requests back. Nothing the page receives is ever executed.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { examples: [], inputs: [], inputsOf: null, values: {}, socket: null, queued: [], run: null, compileTimer: 0, compiling: "", pushes: 0, cluster: "", readonly: "", room: "", refused: false, me: "", shownRun: "" };
const PUBLISHING = ["run", "restart", "attach", "deliver-all", "step", "where", "timeout", "drop", "dup", "delay-from", "delay", "reorder", "seed"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function send(request) {
  const text = JSON.stringify(request);
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(text);
  else state.queued.push(text);
}

function ownRoom() {
  // ?room=own (a shared exercise's link): a room of this page's own, kept in its address for a reload
  state.room = new URLSearchParams(location.search).get("room") || "";
  if (state.room.toLowerCase() !== "own") return;
  const digits = crypto.getRandomValues(new Uint32Array(2));
  state.room = "r" + [...digits].map((d) => d.toString(36)).join("").slice(0, 10);
  // only the room's word changes: the rest of the address stays as typed (a '+' in it a plus: fromLink)
  history.replaceState(null, "", location.search.replace(/([?&])room=own(?=&|$)/i, `$1room=${state.room}`));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/ws" + (state.room ? "?room=" + encodeURIComponent(state.room) : ""));
  state.socket = socket;
  socket.onopen = () => {
    $("connection").textContent = "connected";
    for (const text of state.queued.splice(0)) socket.send(text);
  };
  socket.onclose = () => {
    if (state.refused) return void ($("connection").textContent = "not connected");  // said why; trying again changes nothing
    $("connection").textContent = "disconnected: reconnecting…";
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => {
    state.pushes += 1;
    document.body.dataset.pushes = String(state.pushes);
    const message = JSON.parse(event.data);
    const handler = handlers[message.type];
    if (handler) handler(message);
  };
}

// -- what the server pushes ---------------------------------------------------------------

const handlers = {
  choices(m) {
    state.examples = m.examples;
    state.me = m.you;  // this page, as the runs it starts are marked
    const select = $("example");
    select.replaceChildren(el("option", { value: "" }, "choose one…"));
    for (const e of m.examples) select.append(el("option", { value: String(e.index) }, `${e.index + 1}. ${e.title}`));
    if (state.linkExample !== undefined && state.examples[state.linkExample]) {  // ?example=N: show what runs
      select.value = String(state.linkExample);
      showExample(state.examples[state.linkExample]);
    } else if (state.linkExample !== undefined && !state.linkRuns) {  // a link that runs hears it from the server
      const count = state.examples.length;
      handlers.problem({ message: `example ${state.linkExample + 1}: there are ${count} worked examples (1 to ${count})` });
    } else {
      matchExample();  // a link's source (or one typed before the examples came) that is an example's: its lesson too
    }
    state.linkExample = undefined;
    if (!m.hosts.length) {
      $("where").querySelector('option[value="hosts"]').disabled = true;
      $("where").title = m.room ? "gate hosts are the shared room's: open this server's address without ?room to run on them"
        : "start the server with --hosts N to run on gate host processes";
    }
    showRoom(m.room);
    state.readonly = m.readonly;
    document.body.dataset.readonly = m.readonly ? "1" : "";
    const notice = $("readonly");
    notice.hidden = !m.readonly;
    notice.textContent = m.readonly ? m.readonly.charAt(0).toUpperCase() + m.readonly.slice(1) + "." : "";
    for (const id of PUBLISHING) {
      $(id).disabled = Boolean(m.readonly);  // the server refuses these anyway
      if (m.readonly) $(id).title = "this server only watches";
    }
  },
  compiled(m) {
    if (m.ok && state.run && state.run.compile_error) $("error").hidden = true;  // said of a source now mended
    const box = $("compile-error");
    if (!m.ok) {
      $("compile-warning").hidden = true;
      box.hidden = false;
      box.textContent = m.message;
      box.dataset.from = "compile";  // what is typed here: runs leave it alone
      box.dataset.source = state.compiling;  // the source it is about (not one picked meanwhile)
      box.dataset.line = m.line;
      box.dataset.column = m.column;
      return;
    }
    box.hidden = true;
    const warning = $("compile-warning");
    warning.hidden = m.warnings.length === 0;
    warning.textContent = m.warnings.join("\n");
    showInputs(m.inputs);
  },
  problem(m) {
    if (m.final) state.refused = true;
    const box = $("problem");
    box.hidden = false;
    box.textContent = m.message;
    box.dataset.from = m.form ? "form" : "server";  // the form's check is about what is typed: an edit clears it
  },
  run(m) {
    if (m.run && m.run !== state.shownRun) {  // a new run in this room
      const before = state.shownRun === "";  // there when this page came: followed only into an empty form
      state.shownRun = m.run;
      for (const id of ["circuit", "lamport"]) $(id).scrollTop = 0;  // a new run's pictures start at their top
      if (m.by !== state.me && (!before || $("source").value.trim() === "")) followRun(m);  // the form shows what ran
    }
    state.run = m;
    const status = $("status");
    status.textContent = m.status;
    status.className = "pill " + m.status;
    document.body.dataset.status = m.status;
    $("title").textContent = m.title;
    $("where-label").textContent = m.where ? "on " + m.where : "";
    const error = $("error");
    error.hidden = !m.error;
    // a compile error is said once, in the box under the source, where it is wrong
    error.textContent = m.compile_error ? "the source does not compile: the box under it says where" : m.error;
    const compileError = $("compile-error");
    if (m.compile_error) {
      compileError.hidden = false;
      compileError.textContent = m.compile_error.message;
      compileError.dataset.from = "run";
    } else if (compileError.dataset.from === "run") {  // a later run (from any page) clears a run's error
      compileError.hidden = true;
    }
    showResult(m.result, m.arrived);
    markStale();
    showSummary(m.summary);
    $("stepper").hidden = !m.step;
  },
  progress(m) {
    showProgress(m.progress);
  },
  log(m) {
    const list = $("log");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    const first = m.said - m.sentences.length + 1;
    list.replaceChildren(...m.sentences.map((s, i) => el("li", { value: first + i }, s.replace(/^\s*\d+\.\s*/, ""))));
    if (atBottom) list.scrollTop = list.scrollHeight;
  },
  pictures(m) {
    showSvg("circuit", m.circuit, m.circuit_note);
    // while a student steps, the diagram follows the newest events (unless they scrolled away from them)
    showSvg("lamport", m.lamport, m.lamport_note, Boolean(state.run && state.run.step));
  },
  step(m) {
    // Rows are kept, not redrawn: a click must land on the message it was aimed at, even while
    // new messages arrive (they are appended) and others leave.
    const list = $("pending");
    const wanted = new Set(m.pending.map((p) => p.id));
    for (const row of [...list.children]) if (!wanted.has(row.dataset.id || "")) row.remove();
    for (const p of m.pending) {
      const row = list.querySelector(`li[data-id="${p.id}"]`) || list.appendChild(pendingRow(p));
      row.className = `${p.phase}${p.pinned ? " pinned" : ""}`;
      row.querySelector("button.hold").textContent = p.pinned ? "unpin" : "pin";
    }
    const over = $("step").checked ? "the run is over: Run or Restart to step through it again" : "no run in step mode (tick step mode, then Run)";
    const idle = m.stepping ? "nothing waits right now" : over;
    if (!m.pending.length) list.append(el("li", { class: "empty hint" }, m.auto ? "delivering everything as it comes" : idle));
    else if (m.stepping && m.auto && m.pending.every((p) => p.pinned)) {  // "deliver all" leaves pinned ones: the run waits on them
      list.append(el("li", { class: "empty hint" }, "pinned: they wait until you unpin or deliver them, and the run with them"));
    }
    $("deliver-all").disabled = Boolean(state.readonly) || !m.stepping || m.auto;  // nothing it could deliver
    const replay = $("replaying");
    replay.hidden = !m.replaying.length;
    replay.textContent = m.replaying.length ? `replaying: ${counted(m.replaying.length, "earlier choice")} still to come, next: ${m.replaying[0]}` : "";
    const history = $("history");
    history.parentElement.hidden = !m.history.length;  // nothing to go back to outside step mode
    const told = JSON.stringify(m.history);
    if (history.dataset.told === told) return;
    history.dataset.told = told;
    history.replaceChildren(
      el("li", { class: "start", value: 0 }, "the start", travelButton(0)),
      ...m.history.map((c, i) => el("li", { class: c.action, value: i + 1 }, c.label, travelButton(i + 1))),
    );
  },
  cluster(m) {
    const told = JSON.stringify(m);
    if (state.cluster === told) return;  // unchanged: keep the buttons where they are
    state.cluster = told;
    const ours = $("our-hosts");
    ours.replaceChildren(
      ...m.ours.map((h) => {
        const kill = el("button", { class: "kill", type: "button" }, "kill");
        kill.disabled = h.state !== "running" || Boolean(state.readonly);
        kill.addEventListener("click", () => send({ type: "kill_host", name: h.name }));
        const start = el("button", { class: "start", type: "button" }, "start");
        start.disabled = h.state === "running" || h.state === "stopping" || Boolean(state.readonly);
        start.addEventListener("click", () => send({ type: "start_host", name: h.name }));
        return el("li", { "data-host": h.name }, el("span", {}, h.name + " "), el("span", { class: `host-state state-${h.state.split(" ")[0]}` }, h.state), kill, start);
      }),
    );
    const none = state.room && m.hosts.length ? "they are the shared room's: open this server's plain address to run on them or kill one"
      : "none started here (gatemesh serve --hosts N)";
    if (!m.ours.length) ours.append(el("li", { class: "hint" }, none));
    const online = m.hosts.filter((h) => h.state.startsWith("online"));
    state.seenOnline = new Set([...(state.seenOnline || []), ...online.map((h) => h.name)]);
    // a dead host by name: first those this page saw online (a broker keeps every host that ever was)
    const offline = m.hosts.filter((h) => !h.state.startsWith("online")).map((h) => h.name)
      .sort((a, b) => Number(state.seenOnline.has(b)) - Number(state.seenOnline.has(a)));
    const gone = offline.length ? ` (${offline.slice(0, 5).join(", ")}${offline.length > 5 ? ", ..." : ""})` : "";
    $("cluster-hosts").replaceChildren(
      ...online.map((h) => el("li", {}, el("span", {}, h.name), el("span", { class: "state-online" }, h.state))),
      el("li", { class: "hint" }, `${counted(online.length, "host")} online on the broker, ${offline.length} offline${gone}` + (m.error ? `; ${m.error}` : "")),
    );
    const select = $("deployment");
    const chosen = select.value;
    select.replaceChildren(
      ...(m.deployments.length
        ? m.deployments.map((d) => el("option", { value: d.name }, `${d.name}: ${d.gates} gates on ${d.hosts.join(", ")} (${d.state})`))
        : [el("option", { value: "" }, "none on this broker")]),
    );
    state.deployments = m.deployments;
    if (m.deployments.some((d) => d.name === chosen)) select.value = chosen;  // else the first: never a blank
  },
};

const ACTIONS = {
  deliver: "deliver it to its reader(s) now",
  drop: "drop it: it is never delivered",
  duplicate: "deliver it now and keep a second copy waiting, to deliver later (or drop)",
  hold: "pin it: \u201cdeliver all\u201d leaves it waiting (unpin to let it go)",
};

function pendingRow(p) {
  const buttons = ["deliver", "drop", "duplicate", "hold"].map((action) => {
    const button = el("button", { class: action, type: "button", title: ACTIONS[action] }, action === "hold" ? "pin" : action);
    button.disabled = Boolean(state.readonly);
    button.addEventListener("click", () => send({ type: action, id: p.id }));
    return button;
  });
  return el("li", { "data-id": p.id, "data-key": p.key }, el("span", { class: "label" }, p.label), ...buttons);
}

function travelButton(index) {
  const button = el("button", { class: "travel", type: "button", title: "run again, replaying the choices up to here" }, "go back here");
  button.disabled = Boolean(state.readonly);
  button.dataset.index = String(index);
  button.addEventListener("click", () => send({ type: "travel", index }));
  return button;
}

function showRoom(room) {
  // which room this page is in: the shared one (every page at the plain address) or its own
  const pill = $("room");
  pill.hidden = !room;
  pill.textContent = room ? "room " + room : "";
  pill.title = room ? "every page that opens this address is in this room and sees its runs; no other page does" : "";
  const link = $("room-link");
  link.textContent = room ? "the shared room" : "a room of my own";
  link.href = room ? "/" : "/?room=own";
  link.title = room ? "the room every page at the plain address shares (its gate hosts too)"
    : "runs that no other page sees or replaces";
}

function showSvg(id, svg, note, follow = false) {
  // `follow`: a box scrolled to its end stays at its end as the picture grows (time flows down)
  const box = $(id);
  if (svg) {
    const keep = box.scrollTop;
    const atEnd = keep >= box.scrollHeight - box.clientHeight - 4;
    box.innerHTML = svg.replace(/^<\?xml[^>]*>\s*/, "");  // made by viz/ on the server: no scripts
    if (id === "lamport") stickHeads(box);
    box.scrollTop = follow && atEnd ? box.scrollHeight : keep;
  } else box.replaceChildren();
  box.dataset.note = note || "";
  describeSvg(id);
}

const HEADS = "style, rect.background, text.caption, rect.host-box, text.host, text.node, line.lifeline";

function stickHeads(box) {
  // The diagram's top (its caption, hosts and gate names) again, in a band that stays at the
  // top of the box while it scrolls down a long pass: which line is which gate stays in view.
  // A copy of the picture cut to that height, so it lines up with the lines below at any zoom.
  const picture = box.querySelector(":scope > svg");
  const line = picture && picture.querySelector("line.lifeline");
  if (!line) return;
  const scale = picture.getBoundingClientRect().height / picture.viewBox.baseVal.height;
  const height = Math.ceil((line.getBoundingClientRect().top - picture.getBoundingClientRect().top) / scale) + 4;
  const band = picture.cloneNode(true);
  const prune = (e) => {
    if (e.matches(HEADS)) return;
    if (e.querySelector(HEADS)) for (const child of [...e.children]) prune(child);
    else e.remove();
  };
  for (const child of [...band.children]) prune(child);
  band.setAttribute("height", String(height));
  band.setAttribute("viewBox", `0 0 ${picture.viewBox.baseVal.width} ${height}`);
  const heads = el("div", { class: "heads" });
  heads.setAttribute("aria-hidden", "true");
  heads.style.marginBottom = `-${height}px`;  // over the picture's own top (shown at its own size only)
  heads.append(band);
  box.prepend(heads);
}

function describeSvg(id) {
  // what the note under a picture says, and whether its zoom button has anything to switch
  const box = $(id);
  const actual = box.classList.contains("scroll");
  const more = box.scrollHeight > box.clientHeight + 1 || box.scrollWidth > box.clientWidth + 1;
  box.classList.toggle("more", more);
  const picture = box.querySelector(":scope > svg");
  const shrunk = picture !== null && !actual && picture.getBoundingClientRect().width < Number(picture.getAttribute("width")) - 1;
  const zoom = document.querySelector(`.zoom[data-for="${id}"]`);
  zoom.hidden = !(shrunk || (actual && box.scrollWidth > box.clientWidth + 1) || zoom.dataset.chosen);
  const said = more ? "scroll inside the box for the rest of the diagram" : shrunk ? "shrunk to fit the page: \u201cactual size\u201d shows it as drawn" : "";
  $(id + "-note").textContent = [box.dataset.note, said].filter(Boolean).join("; ");
}

function zoom(button) {
  // a picture shrunk to the page's width, or as drawn with scrollbars: the teacher's choice, kept for later runs
  const actual = $(button.dataset.for).classList.toggle("scroll");
  button.textContent = actual ? "fit to width" : "actual size";
  button.dataset.chosen = "1";
  describeSvg(button.dataset.for);
}

const MAX_GRAD_ROWS = 24;  // a 65,000-gate deployment may have thousands of inputs
const MAX_INPUT_FIELDS = 40;  // past this, a deployment's inputs all take the "blank inputs" value

function shown(number) {
  // as the sentences write a number (Python's %.6g: 0.731059, -12, 1.23457e+06, 4.5e-06); the exact one on hover
  if (typeof number !== "number" || !Number.isFinite(number)) return String(number);
  if (number === 0) return "0";
  const trim = (digits) => (digits.includes(".") ? digits.replace(/0+$/, "").replace(/\.$/, "") : digits);
  const [mantissa, power] = number.toExponential(5).split("e");
  const exponent = Number(power);
  if (exponent < -4 || exponent >= 6) {
    return `${trim(mantissa)}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return trim(number.toFixed(5 - exponent));
}

function showResult(result, arrived) {
  // a failed run shows what did arrive: a lost message loses one number, not the others
  const box = $("result");
  const partial = !result && Boolean(arrived);
  box.hidden = !result && !partial;
  if (box.hidden) return box.replaceChildren();
  const value = result ? result.value : arrived.value;
  const grads = result ? Object.entries(result.grads) : arrived.grads;  // [name, gradient or null]
  const total = result ? grads.length : arrived.inputs;
  const valueShown = value === null
    ? el("span", { class: "missing", id: "value", title: "the output's value never reached the orchestrator" }, "never arrived")
    : el("span", { class: "value", id: "value", title: String(value) }, shown(value));
  const rows = grads.slice(0, MAX_GRAD_ROWS).map(([name, grad]) =>
    el("tr", { "data-input": name }, el("td", {}, `d/d${name}`), grad === null
      ? el("td", { class: "missing", title: "its message never reached the orchestrator" }, "never arrived")
      : el("td", { class: "grad", title: String(grad) }, shown(grad))));
  const more = total > MAX_GRAD_ROWS ? [el("p", { class: "hint" }, `and ${total - MAX_GRAD_ROWS} more gradients (gatemesh run --json prints them all)`)] : [];
  if (!total) more.push(el("p", { class: "hint", id: "no-grads" }, "(no inputs: no gradients; a name given a number, x = 2, is a constant, not an input)"));
  const head = partial ? [el("p", { class: "hint", id: "arrived" }, "the run failed; what reached the orchestrator before it did:")] : [];
  box.replaceChildren(
    ...head,
    el("div", {}, "value = ", valueShown),
    el("table", { id: "grads" }, el("tbody", {}, ...rows)),
    ...more,
  );
}

function ranSource(m) {
  // the source the shown run ran (null: none to compare, a run on a live deployment)
  const request = m && m.request;
  if (!request || request.deployment) return null;
  const example = request.example !== null && request.example !== undefined ? state.examples[request.example] : null;
  return example ? example.source : request.source ?? null;
}

function markStale() {
  // a result under a source edited since, or under fields with other values (Restart runs the
  // last run's again), is the last run's, not the form's: said, and greyed
  const ran = ranSource(state.run);
  const shown = Boolean(state.run && (state.run.result || state.run.arrived)) && ran !== null;
  const edited = shown && ran.trim() !== $("source").value.trim();
  const typed = inputs();
  // the run's own values (the server's: an example's, or the request's) against the fields'
  const retyped = shown && !edited && Object.entries(state.run.inputs || {}).some(([name, value]) => name in typed && typed[name] !== value);
  $("result").classList.toggle("stale", edited || retyped);
  const note = $("stale");
  if (note) note.remove();
  const why = edited ? "the source has changed since (Run runs it)" : "the fields hold other values (Run runs them)";
  if (edited || retyped) $("result").prepend(el("p", { class: "hint", id: "stale" }, `the last run's, of ${state.run.title}: ${why}`));
}

function counted(n, noun) {
  // "1 input", "2 inputs", "65,000 gates"
  return `${n.toLocaleString("en")} ${noun}${n === 1 ? "" : "s"}`;
}

function showSummary(summary) {
  const box = $("summary");
  box.hidden = !summary;
  if (!summary) return;
  const count = (n) => n.toLocaleString("en");
  const ops = Object.entries(summary.ops).map(([op, n]) => `${op} ${count(n)}`).join(", ");
  const hosts = Object.entries(summary.hosts);
  const where = hosts.length === 1 && hosts[0][0] === "local" ? "in the server's process"
    : `on ${counted(hosts.length, "host")}: ` + hosts.map(([h, n]) => `${h} ${count(n)}`).join(", ");
  box.textContent = `${counted(summary.gates, "gate")} (${ops}), ${counted(summary.edges, "edge")}, ${counted(summary.inputs, "input")}, ` +
    `${where}; ${counted(summary.messages, "message")} a pass`;
}

function showDeploymentInputs(deployment) {
  // A deployment with many inputs gets no field per input: each takes the "blank inputs" value.
  const many = deployment.input_count > MAX_INPUT_FIELDS || deployment.inputs.length < deployment.input_count;
  showInputs(many ? [] : deployment.inputs, deployment.name);
  $("fill-note").textContent = many
    ? `${deployment.input_count.toLocaleString("en")} inputs: too many for a field each; every one takes the value of "blank inputs"`
    : "";
  if (many && $("fill").value.trim() === "") $("fill").value = "0.1";
}

function fill() {
  const text = $("fill").value.trim();
  return text === "" ? null : Number(text);
}

function showProgress(progress) {
  const box = $("progress");
  box.hidden = !progress;
  if (!progress) return;
  const share = progress.expected ? Math.min(100, (100 * progress.crossed) / progress.expected) : 0;
  const copies = progress.copies ? `; and ${progress.copies} second cop${progress.copies === 1 ? "y" : "ies"} (duplicates)` : "";
  const parts = progress.phases.map((p) => `${p.phase} ${p.crossed}/${p.expected}`).join(", ") + copies;
  box.replaceChildren(
    el("div", { class: "hint" }, `${progress.crossed} of ${progress.expected} messages of the pass crossed the broker (${parts})`),
    el("div", { class: "bar" }, el("div", { style: "" })),
  );
  box.querySelector(".bar div").style.width = share.toFixed(1) + "%";
}

// -- what the page asks -------------------------------------------------------------------

function showInputs(names, deployment = null) {
  // the fields of the source's inputs, or (`deployment`) of a live deployment's, for Run on it
  for (const input of $("inputs").querySelectorAll("input")) state.values[input.dataset.name] = input.value;
  state.inputs = names;
  state.inputsOf = deployment;
  $("inputs").replaceChildren(
    ...names.map((name) => {
      const input = el("input", { type: "text", inputMode: "decimal", "data-name": name, value: state.values[name] ?? "" });
      input.addEventListener("input", () => { updateShare(); markStale(); });
      return el("label", {}, name, input);
    }),
  );
  updateShare();
}

const NUMBER = /^[+-]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?$/;

function readNumber(text) {
  // a number as the command line reads one (Python's float): 1_000 and 2e-3, not 0x10 (JavaScript's Number would take it)
  const written = text.trim();
  return NUMBER.test(written) ? Number(written.replaceAll("_", "")) : NaN;
}

function inputs() {
  const values = {};
  for (const input of $("inputs").querySelectorAll("input")) {
    if (input.value.trim() !== "") values[input.dataset.name] = readNumber(input.value);
  }
  return values;
}

function faults() {
  return {
    drop: Number($("drop").value) || 0,
    dup: Number($("dup").value) || 0,
    delay_from_ms: Number($("delay-from").value) || 0,
    delay_ms: Number($("delay").value) || 0,
    reorder: $("reorder").checked,
    seed: Number($("seed").value) || 0,
  };
}

function sourceProblem() {
  // the source as typed does not compile (the box under it says so): a run would only fail, and lose the last one's pictures
  const compiled = $("compile-error");
  const refused = !compiled.hidden && compiled.dataset.from === "compile" && compiled.dataset.source === $("source").value;
  return refused ? "the source does not compile: mend it first (the box under it says where)" : "";
}

function formProblem() {
  // said here, at the field, rather than as the request's validation error
  for (const input of $("inputs").querySelectorAll("input")) {
    const name = input.dataset.name;
    if (input.value.trim() === "") return `give ${name} a value (every input needs one, even one the output never reads)`;
    const number = readNumber(input.value);
    if (Number.isNaN(number)) return `${name}: ${input.value.trim()} is not a number`;
    if (!Number.isFinite(number)) return `${name}: ${input.value.trim()} is too large (a value must be finite)`;
  }
  for (const id of ["drop", "dup"]) {
    const p = Number($(id).value || 0);
    if (!(p >= 0 && p <= 1)) return `${id}: give a probability from 0 to 1`;
  }
  const [from, to] = [Number($("delay-from").value || 0), Number($("delay").value || 0)];
  if (!(from >= 0 && from <= 5000 && to >= 0 && to <= 5000)) return "delay: give milliseconds from 0 to 5000";
  if (from > to) return `delay: from ${from} ms to ${to} ms; give the shorter first`;
  const seed = Number($("seed").value || 0);
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= 2 ** 31)) return "seed: give a whole number from 0";
  const limit = timeout();
  if (limit !== null && !(limit > 0 && limit <= 600)) return "timeout: give seconds above 0, up to 600 (or leave it blank)";
  return "";
}

function timeout() {
  // seconds a pass may take before it fails naming who waits; null: the server's, grown with the circuit
  const text = $("timeout").value.trim();
  return text === "" ? null : Number(text);
}

function runRequest() {
  $("problem").hidden = true;
  return { type: "run", source: $("source").value, inputs: inputs(), step: $("step").checked, where: $("where").value, faults: faults(), timeout: timeout() };
}

function faultsText() {
  const f = faults();
  const parts = [];
  if (f.drop) parts.push(`drop=${f.drop}`);
  if (f.dup) parts.push(`dup=${f.dup}`);
  if (f.delay_ms) parts.push(f.delay_from_ms === f.delay_ms ? `delay=${f.delay_ms}ms` : `delay=${f.delay_from_ms}-${f.delay_ms}ms`);
  if (f.reorder) parts.push("reorder");
  if (f.seed && parts.length) parts.push(`seed=${f.seed}`);  // with no fault on, a seed changes nothing
  return parts.join(",");
}

const LINK_WORDS = new Set(["expr", "run", "step", "where", "example", "faults", "room", "timeout"]);
const INPUT_PREFIX = "in:";  // an input named like one of the link's own words: in:step=2 (no name has a ':')

function updateShare() {
  const share = $("share").parentElement;
  // no exercise to share: no source, or fields that are a live deployment's (its run is not the source's)
  share.hidden = $("source").value.trim() === "" || state.inputsOf !== null;
  const params = new URLSearchParams();
  const hosts = $("where").value === "hosts";  // gate hosts are the shared room's: such a link opens there
  if (hosts && !$("share-own").disabled) [state.shareOwn, $("share-own").checked] = [$("share-own").checked, false];
  else if (!hosts && $("share-own").disabled) $("share-own").checked = state.shareOwn;
  $("share-own").disabled = hosts;
  $("share-own").parentElement.title = hosts ? "a run on gate hosts happens in the shared room: its link opens there" : "";
  if ($("share-own").checked && !hosts) params.set("room", "own");  // a class at one link: each student alone
  else if (state.room && !hosts) params.set("room", state.room);  // a pair at one exercise: this room
  params.set("expr", $("source").value);
  for (const input of $("inputs").querySelectorAll("input")) {  // as typed: `abc` stays `abc`, not NaN
    const [name, value] = [input.dataset.name, input.value.trim()];
    if (value !== "") params.set(LINK_WORDS.has(name) ? INPUT_PREFIX + name : name, value);
  }
  if ($("step").checked) params.set("step", "1");
  if ($("where").value === "hosts") params.set("where", "hosts");
  if (faultsText()) params.set("faults", faultsText());  // as --faults writes them
  if ($("timeout").value.trim() !== "") params.set("timeout", $("timeout").value.trim());
  params.set("run", "1");
  const query = params.toString().replaceAll("+", "%20");  // a space as %20: a '+' in a link is a '+' (fromLink)
  $("share").href = "/?" + query;
  const link = location.origin + "/?" + query;
  $("share").textContent = link.length > 90 ? link.slice(0, 87) + "…" : link;
}

function compileSoon() {
  matchExample();
  markStale();
  if ($("problem").dataset.from === "form") $("problem").hidden = true;  // said of what was typed before
  clearTimeout(state.compileTimer);
  state.compileTimer = setTimeout(() => {
    state.compiling = $("source").value;
    send({ type: "compile", source: state.compiling });
  }, 250);
  updateShare();
}

function fromLink() {
  // ?expr=x+y means x+y, as typed (a form would have meant "x y"): the page's links write a space
  // as %20. A link that writes a plus as %2B and has a bare '+' is an older link's: '+' a space.
  const older = location.search.includes("%2B") && location.search.includes("+");
  const params = new URLSearchParams(older ? location.search : location.search.replaceAll("+", "%2B"));
  for (const [name, value] of params) {
    if (name.startsWith(INPUT_PREFIX)) state.values[name.slice(INPUT_PREFIX.length)] = value;
    else if (!LINK_WORDS.has(name)) state.values[name] = value;
  }
  const unread = [];  // what the link says that the page cannot do: said, and the link opens without running
  for (const [word, known] of [["step", ["0", "1"]], ["where", ["here", "hosts"]], ["run", ["0", "1"]]]) {
    const value = params.get(word);
    if (value !== null && !known.includes(value)) unread.push(`${word}=${value}: give ${word}=${known.join(" or ")}`);
  }
  for (const [name, value] of Object.entries(state.values)) {
    if (Number.isNaN(readNumber(value))) unread.push(`${name}=${value}: ${value} is not a number`);
  }
  if (params.get("step") === "1") $("step").checked = true;
  if (params.get("where") === "hosts") $("where").value = "hosts";
  const limit = params.get("timeout");
  if (limit !== null && Number(limit) > 0 && Number(limit) <= 600) $("timeout").value = limit;
  else if (limit !== null) unread.push(`timeout=${limit}: give seconds above 0, up to 600`);
  const unknown = [];
  for (const part of (params.get("faults") || "").split(",").filter(Boolean)) {  // as --faults writes them
    const [key, value] = part.split("=");
    const delay = key === "delay" ? /^(?:([\d.]+)-)?([\d.]+)ms$/.exec(value || "") : null;
    if (delay) [$("delay-from").value, $("delay").value] = [delay[1] ?? delay[2], delay[2]];
    else if (key === "reorder" && value === undefined) $("reorder").checked = true;
    else if (["drop", "dup", "seed"].includes(key) && value !== undefined && Number.isFinite(Number(value))) $(key).value = value;
    else unknown.push(part);
  }
  if (unknown.length) unread.push(`faults: ${unknown.join(", ")}: the page knows drop=P, dup=P, delay=A-Bms, reorder and seed=N`);
  if (unread.length) {  // the rest of the link still opens; it does not run what it cannot read
    handlers.problem({ message: unread.join("; ") + (params.get("run") === "1" ? " (not run)" : "") });
    params.delete("run");
  }
  state.linkRuns = params.get("run") === "1";
  const expr = params.get("expr");
  const example = params.get("example");
  if (expr === null && example === null) return;
  if (expr === null && !/^[1-9]\d*$/.test(example)) {
    return handlers.problem({ message: `example=${example}: give the number of a worked example, from 1` });
  }
  if (expr !== null) $("source").value = expr;
  else state.linkExample = Number(example) - 1;  // shown once the examples arrive
  if (params.get("run") === "1") {
    const request = runRequest();
    request.inputs = {};
    for (const [name, value] of Object.entries(state.values)) request.inputs[name] = readNumber(value);
    if (expr === null) { delete request.source; request.example = Number(example) - 1; request.inputs = {}; }
    send(request);
  }
  if (expr !== null) {
    state.compiling = expr;
    send({ type: "compile", source: expr });
  }
}

function wire() {
  $("source").addEventListener("input", compileSoon);
  for (const button of document.querySelectorAll(".zoom")) button.addEventListener("click", () => zoom(button));
  window.addEventListener("resize", () => { describeSvg("circuit"); describeSvg("lamport"); });
  $("step").addEventListener("change", updateShare);
  $("run").addEventListener("click", () => {
    const wrong = sourceProblem() || formProblem();  // a live deployment's run ("Run on it") has no source
    if (wrong) return handlers.problem({ message: wrong, form: true });
    send(runRequest());
  });
  $("restart").addEventListener("click", () => send({ type: "restart" }));
  $("deliver-all").addEventListener("click", () => send({ type: "deliver_all" }));
  $("deployment").addEventListener("change", () => {
    const deployment = (state.deployments || []).find((d) => d.name === $("deployment").value);
    if (deployment) showDeploymentInputs(deployment);
  });
  $("attach").addEventListener("click", () => {
    const name = $("deployment").value;
    if (!name) return handlers.problem({ message: "no live deployment to run on: deploy one with `gatemesh deploy`" });
    const deployment = (state.deployments || []).find((d) => d.name === name);
    if (deployment && state.inputsOf !== name) {  // its fields are not shown yet: show them, to be filled first
      showDeploymentInputs(deployment);
      const empty = [...$("inputs").querySelectorAll("input")].some((field) => field.value.trim() === "");
      if (empty && fill() === null) {
        return handlers.problem({ message: `give ${name}'s inputs their values above (or a "blank inputs" value), then press Run on it` });
      }
    }
    const wrong = formProblem();
    if (wrong) return handlers.problem({ message: wrong, form: true });
    $("problem").hidden = true;  // what was said of an earlier click (Run's "mend it first") is not of this run
    send({ type: "run", deployment: name, inputs: inputs(), fill: fill(), step: $("step").checked, faults: faults(), timeout: timeout() });
  });
  $("watch").addEventListener("click", () => {
    $("problem").hidden = true;
    const name = $("deployment").value;
    if (!name) return handlers.problem({ message: "no live deployment to watch: deploy one with `gatemesh deploy`" });
    send({ type: "watch", deployment: name });
  });
  $("example").addEventListener("change", () => {
    const e = state.examples[Number($("example").value)];
    if (e) showExample(e);
  });
  for (const id of ["where", "timeout", "drop", "dup", "delay-from", "delay", "reorder", "seed", "share-own"]) $(id).addEventListener("change", updateShare);
}

function followRun(m) {
  // the form takes the run another page of this room started, so that Run, Restart and the share
  // link do what is shown; a run on a live deployment has no source to show
  const request = m.request;
  const source = ranSource(m);
  if (source === null) return;
  for (const [name, value] of Object.entries(m.inputs || {})) state.values[name] = String(value);
  $("source").value = source;
  $("inputs").replaceChildren();  // so that showInputs takes the run's values, not the old fields'
  $("step").checked = request.step;
  if (!$("where").querySelector(`option[value="${request.where}"]`).disabled) $("where").value = request.where;
  const f = request.faults;
  [$("drop").value, $("dup").value, $("delay-from").value, $("delay").value, $("seed").value] =
    [f.drop, f.dup, f.delay_from_ms, f.delay_ms, f.seed].map(String);
  $("reorder").checked = f.reorder;
  $("timeout").value = request.timeout === null ? "" : String(request.timeout);
  compileSoon();
}

function matchExample() {
  // the example (and its lesson) shown only while the source is that example's: an edited one is not
  const source = $("source").value.trim();
  const chosen = (state.examples || [])[Number($("example").value || -1)];
  const index = chosen && chosen.source.trim() === source ? chosen.index : (state.examples || []).findIndex((e) => e.source.trim() === source);
  $("example").value = index >= 0 ? String(index) : "";
  $("lesson").textContent = index >= 0 ? state.examples[index].lesson : "";
}

function showExample(e) {
  $("source").value = e.source;
  $("lesson").textContent = e.lesson;
  $("inputs").replaceChildren();  // so that showInputs keeps the example's values, not the old fields'
  for (const [name, value] of Object.entries(e.inputs)) state.values[name] = String(value);
  compileSoon();
}

ownRoom();
wire();
fromLink();
connect();
