// The chat composer: sends a message, reads the answer as server-sent events and
// renders it as it arrives; Stop aborts the request, which cancels it upstream.
(function () {
  "use strict";
  const form = document.getElementById("composer");
  if (!form) return;
  const textarea = document.getElementById("message");
  const model = document.getElementById("model");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const scroller = document.getElementById("messages");
  const inner = document.getElementById("messages-inner");
  let controller = null;

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }
  function scrollDown(force) {
    if (force || nearBottom()) scroller.scrollTop = scroller.scrollHeight;
  }

  function bubble(role) {
    const msg = document.createElement("div");
    msg.className = "msg " + role;
    const box = document.createElement("div");
    box.className = "bubble";
    msg.appendChild(box);
    inner.appendChild(msg);
    return box;
  }

  function busy(on) {
    send.disabled = on;
    stop.hidden = !on;
    send.textContent = on ? "Answering…" : "Send";
  }

  function fail(box, message) {
    const err = document.createElement("div");
    err.className = "error";
    err.setAttribute("role", "alert");
    err.textContent = message;
    box.appendChild(err);
    box.parentElement.classList.add("failed");
  }

  function meta(box, text) {
    const m = document.createElement("div");
    m.className = "meta";
    m.textContent = text;
    box.appendChild(m);
  }

  function cost(usd) {
    if (usd === null || usd === undefined) return "";
    if (usd === 0) return " · $0";
    return " · $" + (usd < 0.01 ? usd.toPrecision(2) : usd.toFixed(2));
  }

  function remember(conversationId, title) {
    if (form.dataset.conversation === conversationId) return;
    form.dataset.conversation = conversationId;
    history.replaceState(null, "", "/studio/chat/" + conversationId);
    const list = document.getElementById("conversations");
    const none = document.getElementById("no-conversations");
    if (none) none.remove();
    if (list) {
      const item = document.createElement("li");
      item.className = "current";
      item.id = "conv-" + conversationId;
      const link = document.createElement("a");
      link.href = "/studio/chat/" + conversationId;
      link.textContent = title.length > 60 ? title.slice(0, 59) + "…" : title;
      item.appendChild(link);
      list.querySelectorAll("li.current").forEach(function (li) { li.classList.remove("current"); });
      list.prepend(item);
    }
  }

  // Splits a server-sent event stream into {event, data} objects.
  async function* events(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        block.split("\n").forEach(function (line) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        });
        if (data) yield { event: name, data: JSON.parse(data) };
      }
    }
  }

  textarea.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  stop.addEventListener("click", function () {
    if (controller) controller.abort();
  });

  form.addEventListener("submit", async function (e) {
    e.preventDefault();
    const content = textarea.value.trim();
    if (!content || controller) return;
    const empty = document.getElementById("chat-empty");
    if (empty) empty.remove();
    document.getElementById("chat-error").textContent = "";

    bubble("user").textContent = content;
    const box = bubble("assistant");
    const md = document.createElement("div");
    md.className = "md typing";
    box.appendChild(md);
    textarea.value = "";
    scrollDown(true);
    busy(true);

    controller = new AbortController();
    let text = "";
    let pending = false;
    const paint = function () {
      pending = false;
      window.atelier.renderMarkdown(md, text);
      scrollDown(false);
    };
    try {
      const response = await fetch("/studio/chat/send", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": window.atelier.csrf() },
        body: JSON.stringify({
          model: model.value,
          content: content,
          conversation_id: form.dataset.conversation || null,
        }),
        signal: controller.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(function () { return null; });
        md.classList.remove("typing");
        fail(box, body && body.error ? body.error.message : "The request failed (" + response.status + ").");
        return;
      }
      for await (const ev of events(response.body)) {
        if (ev.event === "start") {
          remember(ev.data.conversation_id, content);
        } else if (ev.event === "delta") {
          text += ev.data.content;
          if (!pending) { pending = true; requestAnimationFrame(paint); }
        } else if (ev.event === "done") {
          text = ev.data.message.content;
          paint();
          const u = ev.data.usage || {};
          meta(box, ev.data.model + " · " + (u.total_tokens || 0) + " tokens" + cost(u.cost_usd));
        } else if (ev.event === "error") {
          paint();
          fail(box, ev.data.error.message);
        }
      }
    } catch (err) {
      paint();
      if (err.name === "AbortError") {
        meta(box, "Stopped.");
      } else {
        fail(box, "The connection was lost before the answer was complete.");
      }
    } finally {
      md.classList.remove("typing");
      controller = null;
      busy(false);
      textarea.focus();
    }
  });
})();
