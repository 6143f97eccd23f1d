// Lint rules of the console: eslint's recommended set, browser globals for the console's
// files (plain JavaScript, type-checked by tsc's checkJs), typescript-eslint's recommended
// set for the tests.
import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "test-output/"] },
  js.configs.recommended,
  { files: ["static/**/*.js"], languageOptions: { globals: globals.browser } },
  { files: ["*.js"], languageOptions: { globals: globals.node } },
  { rules: { "no-unused-vars": ["error", { argsIgnorePattern: "^_" }] } },
  {
    files: ["test/**/*.ts"],
    extends: [...tseslint.configs.recommended],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
    rules: { "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }] },
  },
);
