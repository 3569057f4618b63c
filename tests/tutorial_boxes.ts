// The tutorial's SSD300-VGG16 default-box options (GeneratDefaultBoxes), written out so the tests that use them can
// be checked by hand; configs/anchors/ssd300_vgg16.yaml holds the same numbers for the library.
import { type DefaultBoxes, ssdDefaultBoxes, type SsdDefaultBoxesOptions } from "../lib/default_boxes.ts";

/** Feature maps 38..1, steps 8..300, scales 0.1..0.95, ratios [[2],[2,3],[2,3],[2,3],[2],[2]]: 8732 boxes. */
export const TUTORIAL_BOXES: SsdDefaultBoxesOptions = {
  imageSize: 300,
  featureSizes: [38, 19, 10, 5, 3, 1],
  steps: [8, 16, 32, 64, 100, 300],
  minScale: 0.1,
  maxScale: 0.95,
  aspectRatios: [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
  numDefault: [4, 6, 6, 6, 4, 4],
};

/** The tutorial's 8732 default boxes. */
export const tutorialBoxes = (): DefaultBoxes => ssdDefaultBoxes(TUTORIAL_BOXES);
