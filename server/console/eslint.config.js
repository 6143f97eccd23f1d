// Lint rules of the console: eslint's recommended set, browser globals for the console's
// files, Node's for its tests.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/", "test-output/"] },
  js.configs.recommended,
  { files: ["static/**/*.js"], languageOptions: { globals: globals.browser } },
  { files: ["test/**/*.js", "*.js"], languageOptions: { globals: { ...globals.node, ...globals.browser } } },
  { rules: { "no-unused-vars": ["error", { argsIgnorePattern: "^_" }] } },
];
