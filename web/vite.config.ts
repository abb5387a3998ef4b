import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// The build goes to dist/, which is committed: build.rs embeds it into the pos-hub
// binary, so every node serves the app with no npm step on the shop's machines.
export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // One small bundle; no source maps in the binary.
    sourcemap: false,
    reportCompressedSize: false,
  },
});
