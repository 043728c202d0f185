/** portlb's version: `--version`, `portlb_build_info` (kept equal to package.json's by a test). */
export const VERSION = '0.1.0';
