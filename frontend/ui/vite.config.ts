// Builds the app into dist/, which frontend/web_ui.py serves at / (the HTTP API's port).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2020",
    sourcemap: false,
    // one small script and one stylesheet: no chunk splitting for an app of this size
    modulePreload: false,
  },
  server: {
    // `npm run dev`: the app from source, the API of a local `legato server start-dev`
    proxy: { "/api": "http://127.0.0.1:8233" },
  },
});
