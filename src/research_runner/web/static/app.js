// Live parts of a page: every element with data-live-url and data-active="1" is replaced by a fresh copy from
// the server every few seconds, until the copy says nothing on it is running any more. The server renders and
// escapes every copy; no other script runs on these pages.
"use strict";
(function () {
  const PERIOD_MS = 2000;

  async function refresh(element) {
    const response = await fetch(element.dataset.liveUrl, {credentials: "same-origin", cache: "no-store"});
    if (!response.ok) return element;
    const holder = document.createElement("div");
    holder.innerHTML = await response.text();
    const fresh = holder.firstElementChild;
    if (!fresh || fresh.id !== element.id) return element;
    element.replaceWith(fresh);
    return fresh;
  }

  function follow(element) {
    if (element.dataset.active !== "1") return;
    setTimeout(async function tick() {
      let current = element;
      try { current = await refresh(element); } catch (error) { /* the next tick tries again */ }
      follow(current);
    }, PERIOD_MS);
  }

  document.querySelectorAll("[data-live-url]").forEach(follow);
})();
