// The parts of `mvdan-sh` (mvdan/sh's syntax package compiled to JavaScript; it ships no type
// declarations) the command parser uses. Node fields are those of mvdan/sh v3's syntax package.
declare module 'mvdan-sh' {
  export interface ShNode {
    [field: string]: unknown;
  }
  export interface ShWord extends ShNode {
    Parts: ShNode[];
    /** The word's text when it is one plain literal, else ''. */
    Lit(): string;
  }
  export interface ShFile extends ShNode {
    Stmts: ShNode[];
  }
  export interface ShParser {
    /** Throws an object whose `Error()` says where and why the text does not parse. */
    Parse(src: string, name: string): ShFile;
  }
  export const syntax: {
    NewParser(...options: unknown[]): ShParser;
    /** Visits every node depth first; return false to skip a node's children. */
    Walk(node: ShNode, visit: (node: ShNode | null) => boolean): void;
    NodeType(node: ShNode): string;
    Variant(v: number): unknown;
    LangBash: number;
  };
  const sh: { syntax: typeof syntax };
  export default sh;
}
