// fedloom dashboard: the authenticated JSON API client. The admin credential lives in sessionStorage
// (gone when the tab closes) and travels as "Authorization: Bearer" on every call.
"use strict";

const TOKEN_KEY = "fedloom.dashboard.token";
const API = "/dashboard/api";

class Unauthorized extends Error {}

function getToken() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function setToken(t) { sessionStorage.setItem(TOKEN_KEY, t); }
function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }

async function apiGet(path) {
  const res = await fetch(API + path, { headers: { Authorization: `Bearer ${getToken()}` }, cache: "no-store" });
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}));
    throw new Unauthorized(body.detail || res.statusText);
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(`${res.status} ${body.error || ""}: ${body.detail || res.statusText}`);
  }
  return res.json();
}

// fetch a model with the credential, then hand it to the browser as a file download
async function apiDownload(path, filename) {
  const res = await fetch(API + path, { headers: { Authorization: `Bearer ${getToken()}` } });
  if (!res.ok) throw new Error(`download failed: ${res.status}`);
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

window.FedApi = { apiGet, apiDownload, getToken, setToken, clearToken, Unauthorized };
