// The chat in place: asks /chat/api/answer (the page's own, key-free twin of /api/answer) and
// builds the same markup as templates/chat.html, plus thumbs up/down feedback on each answer.
// All user and article text goes in through text nodes (append/textContent), never as HTML.
"use strict";

(() => {
  const MAX_HISTORY = 10;
  const form = document.getElementById("ask");
  const box = document.getElementById("question");
  const send = form.querySelector(".send");
  const transcript = document.getElementById("transcript");
  const loading = document.getElementById("loading");
  const formError = document.getElementById("form-error");
  // Earlier questions of this conversation (the page may come from a form post).
  const history = Array.from(form.querySelectorAll('input[name="history"]'), (input) => input.value);
  let busy = false;
  let feedbackCount = 0;

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children); // strings become text nodes
    return node;
  }

  // Only http(s) and relative URLs become links (the URL parser drops tabs and newlines as
  // a browser does); any other (javascript:, data:) is shown as text, as on the page.
  function linkTo(url) {
    try {
      const { protocol } = new URL(url, document.baseURI);
      return protocol === "http:" || protocol === "https:" ? { href: url } : {};
    } catch {
      return {};
    }
  }

  // Highlight offsets count code points (Python), not UTF-16 units: slice by code point.
  function marked(citation) {
    const chars = Array.from(citation.text);
    const pieces = [];
    let cursor = 0;
    for (const [start, end] of citation.highlights) {
      if (start > cursor) pieces.push(chars.slice(cursor, start).join(""));
      pieces.push(el("mark", {}, chars.slice(start, end).join("")));
      cursor = end;
    }
    if (cursor < chars.length) pieces.push(chars.slice(cursor).join(""));
    return pieces;
  }

  function passage(citation) {
    const link = el(
      "a",
      { class: "passage-link", ...linkTo(citation.url), target: "_blank", rel: "noopener" },
      `${citation.article} › ${citation.section} `,
      el("span", { "aria-hidden": "true" }, "↗"),
    );
    return el("div", { class: "passage" }, el("p", { class: "passage-text" }, ...marked(citation)), link);
  }

  function chip(citation) {
    const label = `Source ${citation.n}: ${citation.article}, ${citation.section}`;
    const summary = el("summary", { class: "chip", "aria-label": label }, String(citation.n));
    return el("details", { class: "cite" }, summary, passage(citation));
  }

  function quotes(answer) {
    const list = el("div", { class: "quotes" });
    for (const citation of answer.citations) {
      const chars = Array.from(citation.text);
      for (const [start, end] of citation.highlights) {
        const sentence = el("span", { class: "sentence" }, chars.slice(start, end).join(""));
        list.append(el("div", { class: "quote" }, sentence, " ", chip(citation)));
      }
    }
    return list;
  }

  function sourceList(citations) {
    const list = el("ol", { class: "sources" });
    for (const citation of citations) {
      const name = el(
        "span",
        { class: "source-name" },
        el("span", { class: "source-article" }, citation.article),
        " ",
        el("span", { class: "source-section" }, citation.section),
      );
      const number = el("span", { class: "num", "aria-hidden": "true" }, String(citation.n));
      const attributes = { class: "source", ...linkTo(citation.url), target: "_blank", rel: "noopener" };
      list.append(el("li", {}, el("a", attributes, number, name)));
    }
    return list;
  }

  // What RAG_CHAT asks of the page's posts: its signed token, or the API key typed in.
  function access() {
    const token = document.querySelector('meta[name="chat-token"]');
    const key = document.querySelector('#ask input[name="api_key"]');
    if (key && key.value) return { Authorization: `Bearer ${key.value}` };
    return token ? { "X-Chat-Token": token.content } : {};
  }

  async function postJSON(url, payload) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...access() },
      body: JSON.stringify(payload),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.detail || `The server refused the request (HTTP ${response.status}).`);
    }
    return body;
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

  function quotedPassageIds(answer) {
    return answer.citations.filter((c) => c.highlights.length).map((c) => c.passage_id);
  }

  function answerTurn(answer) {
    const card = el(
      "article",
      { class: "bubble answer", "data-answered": String(answer.answered) },
      el("h2", { class: "visually-hidden" }, "Answer"),
    );
    card.append(
      answer.answered ? quotes(answer) : el("p", { class: "declined-text" }, answer.answer),
    );
    const used = answer.citations.filter((c) => c.highlights.length);
    const related = answer.citations.filter((c) => !c.highlights.length);
    if (used.length) card.append(el("h3", { class: "sources-title" }, "Sources"), sourceList(used));
    if (related.length && answer.answered) {
      const summary = el("summary", {}, `Related sections (${related.length})`);
      card.append(el("details", { class: "related" }, summary, sourceList(related)));
    } else if (related.length) {
      card.append(el("h3", { class: "sources-title" }, "Closest sections"), sourceList(related));
    }
    card.append(feedbackControls(answer.question, answer.answer, quotedPassageIds(answer)));
    card.append(el("p", { class: "meta" }, `${Math.round(answer.took_ms)} ms`));
    const classes = answer.answered ? "turn turn-answer" : "turn turn-answer declined";
    return el("li", { class: classes }, card);
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
    showError("");
    document.getElementById("examples")?.remove();
    const turn = userTurn(question);
    transcript.append(turn);
    box.value = "";
    setBusy(true);
    loading.scrollIntoView({ block: "nearest" });
    const request = { question, history: history.slice(-MAX_HISTORY) };
    const articles = chosenArticles();
    if (articles.length) request.articles = articles;
    try {
      const body = await postJSON("/chat/api/answer", request);
      const answerTurnNode = answerTurn(body);
      transcript.append(answerTurnNode);
      history.push(question);
      answerTurnNode.scrollIntoView({ block: "nearest" });
    } catch (error) {
      turn.remove();
      box.value = question;
      const offline = error instanceof TypeError;
      showError(offline ? "Could not reach the server. Check your connection and try again." : error.message);
    } finally {
      setBusy(false);
      box.focus();
    }
  }

  // Answers rendered by the server (a form post without JavaScript) get feedback controls too.
  for (const card of transcript.querySelectorAll(".answer[data-question]")) {
    const ids = card.dataset.passageIds.split(" ").filter(Boolean);
    card.querySelector(".meta").before(feedbackControls(card.dataset.question, card.dataset.answer, ids));
  }

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

  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  document.querySelector(".example-list")?.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(event.submitter?.value || "");
  });
})();
