// atelier studio: what every page shares. Markdown from models is rendered with
// marked, then sanitized with DOMPurify before it touches the page; code is
// highlighted and gets a copy button.
(function () {
  "use strict";

  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  if (window.DOMPurify) {
    // Links from model output open elsewhere and carry no referrer.
    window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
  }

  function decorateCode(root) {
    root.querySelectorAll("pre > code").forEach(function (code) {
      if (window.hljs && !code.dataset.highlighted) {
        try { window.hljs.highlightElement(code); } catch (_) { /* unknown language: plain */ }
      }
      const pre = code.parentElement;
      if (pre.querySelector(".copy")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(code.textContent).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        }, function () { button.textContent = "Copy failed"; });
      });
      pre.appendChild(button);
    });
  }

  // Renders `source` (or the element's own text, the first time) as Markdown.
  function renderMarkdown(el, source) {
    if (source === undefined) {
      source = el.dataset.source !== undefined ? el.dataset.source : el.textContent;
    }
    el.dataset.source = source;
    if (!window.marked || !window.DOMPurify) {
      el.textContent = source;
      return;
    }
    el.innerHTML = window.DOMPurify.sanitize(window.marked.parse(source, { gfm: true, breaks: false }));
    decorateCode(el);
  }

  function renderAll(root) {
    (root || document).querySelectorAll("[data-md]").forEach(function (el) { renderMarkdown(el); });
  }

  window.atelier = { csrf: csrf, renderMarkdown: renderMarkdown };

  document.addEventListener("DOMContentLoaded", function () {
    renderAll(document);
    document.body.addEventListener("htmx:afterSwap", function (e) {
      renderAll(e.detail.target);
      // The first result replaces the "nothing yet" note.
      if (e.detail.target.id === "gallery" || e.detail.target.id === "jobs") {
        document.querySelectorAll("[data-hide-on-swap]").forEach(function (el) { el.remove(); });
      }
    });

    // Inline rename of conversations.
    document.body.addEventListener("click", function (e) {
      const trigger = e.target.closest("[data-rename]");
      if (!trigger) return;
      const item = document.getElementById("conv-" + trigger.dataset.rename);
      const form = item && item.querySelector(".rename-form");
      if (!form) return;
      item.querySelector(".title").hidden = true;
      item.querySelector(".actions").hidden = true;
      form.hidden = false;
      form.querySelector("input").select();
    });
    document.body.addEventListener("renamed", function () {
      document.querySelectorAll(".rename-form").forEach(function (form) {
        form.hidden = true;
        const item = form.closest("li");
        item.querySelector(".title").hidden = false;
        item.querySelector(".actions").hidden = false;
      });
    });
    document.body.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && e.target.closest(".rename-form")) {
        document.body.dispatchEvent(new Event("renamed"));
      }
    });

    // On a phone the conversation list starts folded.
    const panel = document.getElementById("conversations-panel");
    if (panel && window.matchMedia("(max-width: 760px)").matches) panel.open = false;

    // Copy buttons for read-only fields (a new API key).
    document.body.addEventListener("click", function (e) {
      const button = e.target.closest("[data-copy]");
      if (!button) return;
      const field = document.querySelector(button.dataset.copy);
      if (!field) return;
      field.select();
      navigator.clipboard.writeText(field.value).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      }, function () { button.textContent = "Press Ctrl+C"; });
    });

    // Forms that may take a while say so.
    document.querySelectorAll("form[data-busy]").forEach(function (form) {
      form.addEventListener("submit", function () {
        const button = form.querySelector("button[type=submit]");
        if (button) { button.disabled = true; button.textContent = form.dataset.busy; }
      });
    });
  });
})();
