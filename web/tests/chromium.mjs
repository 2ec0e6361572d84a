// Debian's chromium, headless, as every page test launches it: no sandbox
// as root; no background traffic to Google's hosts (there is no network
// but loopback here, and those lookups only slow the start).
import { chromium } from "playwright-core";

export const launch = (extra = []) =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...extra,
    ],
  });
