import { defineConfig } from "@playwright/test";

// Debian's Chromium (apt `chromium`); Playwright's own browser download is not used.
// The flags keep Chromium off the network beyond loopback, as root in CI.
export default defineConfig({
  testDir: "e2e",
  testMatch: /.*\.spec\.ts/,
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 180_000,
  expect: { timeout: 15_000 },
  // The JSON report is what tests/web_e2e.rs prints the failures from, last, so that a
  // CI log's tail names the failed assertion.
  reporter: [["list"], ["json", { outputFile: "test-results/report.json" }]],
  outputDir: "test-results",
  use: {
    viewport: { width: 1280, height: 800 },
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
    trace: "off",
    screenshot: "only-on-failure",
  },
});
