import type { Citation } from "../src/api";

/** A citation of the docs vault's Dates note, at its "Due" heading; `over` changes any field. */
export const citation = (over: Partial<Citation> = {}): Citation => ({
  n: 1,
  path: "Getting Started/Dates.md",
  title: "Dates",
  heading_path: ["Dates", "Due"],
  start_line: 3,
  end_line: 9,
  page: null,
  kind: "note",
  snippet: "…",
  link: "obsidian://open?vault=v&file=Getting%20Started%2FDates.md",
  ...over,
});
