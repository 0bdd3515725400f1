// fedloom dashboard: hash routing, the sign-in form, and live polling (every 2 s, only while the tab is visible).
"use strict";

(() => {
  const { getToken, setToken, clearToken, Unauthorized } = window.FedApi;
  const pages = window.FedPages;
  const POLL_MS = 2000;
  const main = document.getElementById("main");
  const login = document.getElementById("login");
  const live = document.getElementById("live");
  const logout = document.getElementById("logout");
  let lastKey = null;
  let busy = false;
  // per-page choices (selected metric...) kept across polls
  const state = { set(values) { Object.assign(this, values); refresh(true); } };

  function takeTokenFromHash() {
    // fedloom ui prints .../dashboard/#token=...: keep it for this tab and drop it from the address bar
    const m = location.hash.match(/^#token=([^&]+)/);
    if (m) {
      setToken(decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + "#/runs");
    }
  }

  function route() {
    const parts = (location.hash.replace(/^#\/?/, "") || "runs").split("/");
    const name = parts[0];
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === name || (name === "run" && a.dataset.nav === "runs")));
    if (name === "run" && parts[1]) return () => pages.runPage(parts[1], state);
    if (name === "agents") return () => pages.agentsPage(parts[1], state);
    if (name === "compare") return () => pages.comparePage((parts[1] || "").split(",").filter(Boolean), state);
    return () => pages.runsPage();
  }

  function showLogin(message) {
    login.hidden = false;
    main.hidden = true;
    logout.hidden = true;
    document.getElementById("login-error").textContent = message || "";
    lastKey = null;
  }

  async function refresh(force) {
    if (busy) return;
    if (!getToken()) { showLogin(""); return; }
    busy = true;
    try {
      const page = await route()();
      login.hidden = true;
      main.hidden = false;
      logout.hidden = false;
      live.className = "live";
      if (force || page.key !== lastKey) {
        const scroll = window.scrollY;
        main.replaceChildren();
        page.render(main);
        lastKey = page.key;
        window.scrollTo(0, scroll);
      }
    } catch (err) {
      if (err instanceof Unauthorized) { clearToken(); showLogin(err.message); }
      else { live.className = "live error"; live.textContent = "error"; live.title = String(err.message || err); }
    } finally {
      busy = false;
      if (live.className === "live") { live.textContent = "live"; }
    }
  }

  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    setToken(input.value.trim());
    input.value = "";
    refresh(true);
  });
  logout.addEventListener("click", () => { clearToken(); showLogin("Signed out."); });
  window.addEventListener("hashchange", () => { takeTokenFromHash(); lastKey = null; refresh(true); });
  document.addEventListener("visibilitychange", () => {
    live.classList.toggle("paused", document.visibilityState !== "visible");
    if (document.visibilityState === "visible") refresh(false);
  });
  setInterval(() => { if (document.visibilityState === "visible") refresh(false); }, POLL_MS);
  takeTokenFromHash();
  refresh(true);
})();
