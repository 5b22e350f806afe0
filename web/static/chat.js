// The chat in place: asks /chat/api/answer (the page's own, key-free twin of /api/answer) for
// the answer's HTML, rendered by the server from the same partial as the page without
// JavaScript, and inserts it. Adds what needs a script: thumbs up/down feedback, copying an
// answer or its link, and the live character count.
// User text goes in through text nodes (append/textContent); only the server's escaped
// fragment is parsed as HTML.
"use strict";

(() => {
  const MAX_HISTORY = 10;
  const form = document.getElementById("ask");
  const box = document.getElementById("question");
  const send = form.querySelector(".send");
  const transcript = document.getElementById("transcript");
  const loading = document.getElementById("loading");
  const formError = document.getElementById("form-error");
  const count = document.getElementById("count");
  const newConversation = document.getElementById("new-conversation");
  const maxChars = Number(box.dataset.maxChars);
  const nearLimit = Math.floor(maxChars * 0.9);
  // Earlier questions of this conversation (the page may come from a form post or a link).
  const history = Array.from(form.querySelectorAll('input[name="history"]'), (input) => input.value);
  let busy = false;
  let feedbackCount = 0;

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children); // strings become text nodes
    return node;
  }

  const thousands = (n) => n.toLocaleString("en-US");

  // The server counts code points of the trimmed question, so does this.
  const length = (text) => Array.from(text.trim()).length;

  // The same wording as the server's (it sends its template in data-too-long).
  function tooLong(n) {
    return box.dataset.tooLong
      .replace("{length}", thousands(n))
      .replace("{limit}", thousands(maxChars))
      .replace("{over}", thousands(n - maxChars));
  }

  function showCount() {
    const n = length(box.value);
    const left = maxChars - n;
    count.textContent =
      n >= nearLimit && left >= 0
        ? `${thousands(left)} character${left === 1 ? "" : "s"} left`
        : `${thousands(n)} / ${thousands(maxChars)}`;
    count.classList.toggle("count-near", n >= nearLimit && left >= 0);
    count.classList.toggle("count-over", left < 0);
    if (left < 0) showError(tooLong(n));
    else if (formError.dataset.tooLong) showError("");
    formError.dataset.tooLong = left < 0 ? "yes" : "";
  }

  // What RAG_CHAT asks of the page's posts: its signed token, or the API key typed in.
  function access() {
    const token = document.querySelector('meta[name="chat-token"]');
    const key = document.querySelector('#ask input[name="api_key"]');
    if (key && key.value) return { Authorization: `Bearer ${key.value}` };
    return token ? { "X-Chat-Token": token.content } : {};
  }

  async function post(url, payload, accept) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: accept, ...access() },
      body: JSON.stringify(payload),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || `The server refused the request (HTTP ${response.status}).`);
    }
    return response;
  }

  const postJSON = async (url, payload) => (await post(url, payload, "application/json")).json();

  // The server's fragment (one <li>) as a node; its text is escaped by the server's template.
  async function postForHTML(url, payload) {
    const template = document.createElement("template");
    template.innerHTML = await (await post(url, payload, "text/html")).text();
    return template.content.firstElementChild;
  }

  // Copies text; the Clipboard API needs a secure context, so fall back to a selection.
  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const scratch = el("textarea", { class: "visually-hidden", readonly: "" });
    scratch.value = text;
    document.body.append(scratch);
    scratch.select();
    const copied = document.execCommand("copy");
    scratch.remove();
    if (!copied) throw new Error("copy refused");
  }

  // Thumbs up/down with an optional comment, sent together with the vote: one vote an answer.
  // The passages sent are the ones the answer quotes (none for a declined answer).
  function feedbackControls(question, answerText, passageIds) {
    const id = `feedback-comment-${++feedbackCount}`;
    const comment = el("input", {
      type: "text",
      id,
      class: "feedback-comment",
      maxlength: "2000",
      placeholder: "Comment (optional)",
    });
    const label = el("label", { for: id, class: "visually-hidden" }, "Comment, sent with your vote (optional)");
    const vote = (name, symbol) =>
      el("button", { type: "button", class: "vote", "aria-label": name, "aria-pressed": "false" }, symbol);
    const up = vote("Helpful", "Yes");
    const down = vote("Not helpful", "No");
    const status = el("p", { class: "feedback-status", role: "status" });
    const group = el(
      "div",
      { class: "feedback", role: "group", "aria-label": "Was this answer helpful?" },
      el("span", { class: "feedback-prompt", "aria-hidden": "true" }, "Helpful?"),
      label,
      comment,
      up,
      down,
      status,
    );
    let state = "open"; // then "sending", then "sent"

    async function send(button, helpful) {
      if (state !== "open") return;
      state = "sending";
      button.setAttribute("aria-pressed", "true");
      status.textContent = "Sending…";
      try {
        await postJSON("/chat/api/feedback", {
          question,
          answer: answerText,
          passage_ids: passageIds,
          helpful,
          comment: comment.value.trim(),
        });
        state = "sent";
        for (const each of [up, down]) each.setAttribute("aria-disabled", "true");
        comment.readOnly = true;
        status.textContent = "Thanks for your feedback!";
      } catch (error) {
        state = "open";
        button.setAttribute("aria-pressed", "false");
        status.textContent =
          error instanceof TypeError ? "Could not reach the server; try again." : error.message;
      }
    }

    up.addEventListener("click", () => send(up, true));
    down.addEventListener("click", () => send(down, false));
    return group;
  }

  // What an answer card gets from the script: the copy button, the link copied on click, and
  // feedback controls. The same for cards of the page and cards fetched in place.
  function enhance(card) {
    const status = card.querySelector(".action-status");
    const report = (message) => {
      status.textContent = message;
    };
    const copyButton = card.querySelector(".copy");
    copyButton.hidden = false;
    copyButton.addEventListener("click", () =>
      copy(copyButton.dataset.copy).then(
        () => report("Answer copied"),
        () => report("Could not copy; select the text instead."),
      ),
    );
    const share = card.querySelector(".share");
    share.addEventListener("click", (event) => {
      event.preventDefault();
      copy(share.href).then(
        () => report("Link copied"),
        () => report("Could not copy; right-click the link to copy it."),
      );
    });
    const ids = card.dataset.passageIds.split(" ").filter(Boolean);
    card.append(feedbackControls(card.dataset.question, card.dataset.answer, ids));
  }

  function userTurn(question) {
    const bubble = el(
      "p",
      { class: "bubble question" },
      el("span", { class: "visually-hidden" }, "You asked: "),
      question,
    );
    return el("li", { class: "turn turn-user" }, bubble);
  }

  function chosenArticles() {
    return Array.from(form.querySelectorAll('input[name="articles"]:checked'), (box) => box.value);
  }

  function showError(message) {
    formError.textContent = message;
    formError.hidden = !message;
  }

  function setBusy(value) {
    busy = value;
    loading.hidden = !value;
    send.disabled = value;
    transcript.setAttribute("aria-busy", String(value));
  }

  async function ask(text) {
    const question = text.trim();
    if (busy) return;
    if (!question) {
      showError("Type a question first.");
      box.focus();
      return;
    }
    if (length(question) > maxChars) {
      showError(tooLong(length(question))); // never cut: the whole question stays in the box
      box.focus();
      return;
    }
    showError("");
    document.getElementById("examples")?.remove();
    const turn = userTurn(question);
    transcript.append(turn);
    box.value = "";
    showCount();
    setBusy(true);
    loading.scrollIntoView({ block: "nearest" });
    const request = { question, history: history.slice(-MAX_HISTORY) };
    const articles = chosenArticles();
    if (articles.length) request.articles = articles;
    try {
      const answerTurn = await postForHTML("/chat/api/answer", request);
      transcript.append(answerTurn);
      enhance(answerTurn.querySelector(".answer"));
      history.push(question);
      newConversation.hidden = false;
      answerTurn.scrollIntoView({ block: "nearest" });
    } catch (error) {
      turn.remove();
      box.value = question;
      showCount();
      const offline = error instanceof TypeError;
      showError(offline ? "Could not reach the server. Check your connection and try again." : error.message);
    } finally {
      setBusy(false);
      box.focus();
    }
  }

  for (const card of transcript.querySelectorAll(".answer")) enhance(card);

  const picker = form.querySelector(".limit");
  picker?.addEventListener("change", () => {
    const count = chosenArticles().length;
    picker.querySelector(".limit-count").textContent = count ? `(${count} chosen)` : "";
  });

  // With JavaScript the empty-question message comes from ask(), in the alert region.
  form.noValidate = true;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(box.value);
  });

  box.addEventListener("input", showCount);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  showCount();

  document.querySelector(".example-list")?.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(event.submitter?.value || "");
  });
})();
